<?php
// The blog's only page. Every request really queries MariaDB (the `db` link): the list of
// posts, or one post whose view counter it bumps.
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
header('Content-Type: text/html; charset=utf-8');
try {
    $db = new mysqli(getenv('BLOG_DB_HOST') ?: 'db', 'blog', 'blog-demo-password', 'blog');
} catch (mysqli_sql_exception $e) {
    http_response_code(503);
    echo "<p>The database is not answering: ", htmlspecialchars($e->getMessage()), "</p>\n";
    exit;
}
$post = isset($_GET['post']) ? (int)$_GET['post'] : 0;
echo "<!doctype html>\n<title>Stockade demo blog</title>\n<h1>Stockade demo blog</h1>\n";
if ($post > 0) {
    $db->query("UPDATE views SET count = count + 1 WHERE post_id = $post");
    $stmt = $db->prepare('SELECT p.title, p.body, p.published, v.count FROM posts p JOIN views v ON v.post_id = p.id WHERE p.id = ?');
    $stmt->bind_param('i', $post);
    $stmt->execute();
    $row = $stmt->get_result()->fetch_assoc();
    if (!$row) {
        http_response_code(404);
        echo "<p>No such post.</p>\n";
        exit;
    }
    printf("<h2>%s</h2>\n<p><small>%s, %d views</small></p>\n<p>%s</p>\n<p><a href=\"/\">all posts</a></p>\n",
        htmlspecialchars($row['title']), $row['published'], $row['count'], htmlspecialchars($row['body']));
} else {
    echo "<ul>\n";
    foreach ($db->query('SELECT id, title, published FROM posts ORDER BY published DESC') as $row) {
        printf("<li><a href=\"/?post=%d\">%s</a> <small>%s</small></li>\n",
            $row['id'], htmlspecialchars($row['title']), $row['published']);
    }
    echo "</ul>\n";
}
