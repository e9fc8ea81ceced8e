-- Run once at image build time, by the Dockerfile, as the server's root user.
CREATE DATABASE IF NOT EXISTS blog;
CREATE USER IF NOT EXISTS 'blog'@'%' IDENTIFIED BY 'blog-demo-password';
GRANT SELECT, INSERT, UPDATE ON blog.* TO 'blog'@'%';
USE blog;
CREATE TABLE posts (
    id INT AUTO_INCREMENT PRIMARY KEY,
    title VARCHAR(200) NOT NULL,
    body TEXT NOT NULL,
    published DATE NOT NULL
);
CREATE TABLE views (
    post_id INT PRIMARY KEY,
    count INT NOT NULL DEFAULT 0
);
INSERT INTO posts (title, body, published) VALUES
    ('Hello, containers', 'Containers are declarative and immutable, so what they should do can be learned.', '2026-11-02'),
    ('Compose files are topology', 'links and depends_on say which service talks to which. Anything else is news.', '2026-11-09'),
    ('No rules to write', 'A short learning period, then every new process, peer, file and syscall stands out.', '2026-11-16');
INSERT INTO views (post_id, count) SELECT id, 0 FROM posts;
