"""The compose parser: declared topology from real-shaped files, and bad files as one line."""

from __future__ import annotations

from pathlib import Path

from enforcer.inventory.compose import load_topology

BLOG = """
version: "2"
services:
  wordpress:
    image: local/wordpress
    links:
      - wordpress_db:mysql
    ports:
      - 8080:80
      - "127.0.0.1:8443:443/tcp"
    depends_on: [wordpress_db]
    command: httpd -f -p 80
  wordpress_db:
    image: local/mariadb
    expose: ["3306"]
    volumes: ["dbdata:/var/lib/mysql", "/srv/conf:/etc/mysql/conf.d:ro"]
    tmpfs: /run
    read_only: true
volumes:
  dbdata: {}
"""


def write(tmp_path: Path, text: str, name: str = "docker-compose.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_blog_topology_links_ports_expose_volumes(tmp_path):
    topo = load_topology("blog", [write(tmp_path, BLOG)])
    assert topo.error == ""
    wp = topo.services["wordpress"]
    assert wp.links == ["wordpress_db"]
    assert wp.depends_on == ["wordpress_db"]
    assert [(p.port, p.host_port, p.host_ip, p.proto) for p in wp.ports] == [
        (80, 8080, "", "tcp"), (443, 8443, "127.0.0.1", "tcp")]
    assert wp.command == ["httpd", "-f", "-p", "80"]
    db = topo.services["wordpress_db"]
    assert [p.port for p in db.expose] == [3306]
    assert db.volumes == ["/var/lib/mysql", "/etc/mysql/conf.d"]
    assert db.tmpfs == ["/run"] and db.read_only is True


def test_v1_format_without_services_key(tmp_path):
    topo = load_topology("old", [write(tmp_path, "web:\n  image: x\n  links: [db]\ndb:\n  image: y\n")])
    assert set(topo.services) == {"web", "db"} and topo.services["web"].links == ["db"]


def test_override_file_merges_over_the_first(tmp_path):
    base = write(tmp_path, "services:\n  web:\n    image: a\n    expose: ['80']\n")
    override = write(tmp_path, "services:\n  web:\n    image: b\n", "override.yml")
    topo = load_topology("p", [base, override])
    assert topo.services["web"].image == "b"
    assert [p.port for p in topo.services["web"].expose] == [80]


def test_long_port_syntax_depends_on_mapping_and_port_ranges(tmp_path):
    text = """
services:
  a:
    ports:
      - target: 80
        published: 8000
        protocol: udp
      - "9000-9002:9000-9002"
    depends_on:
      b: {condition: service_healthy}
  b: {}
"""
    topo = load_topology("p", [write(tmp_path, text)])
    a = topo.services["a"]
    assert [(p.port, p.host_port, p.proto) for p in a.ports] == [
        (80, 8000, "udp"), (9000, 9000, "tcp"), (9001, 9001, "tcp"), (9002, 9002, "tcp")]
    assert a.depends_on == ["b"]


def test_variables_are_interpolated_from_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WEB_PORT", "8081")
    (tmp_path / ".env").write_text("DB_PORT=3307\n")
    text = "services:\n  web:\n    ports: ['${WEB_PORT}:80']\n  db:\n    expose: ['${DB_PORT}', '${MISSING:-5432}']\n"
    topo = load_topology("p", [write(tmp_path, text)], str(tmp_path))
    assert topo.services["web"].ports[0].host_port == 8081
    assert [p.port for p in topo.services["db"].expose] == [3307, 5432]


def test_yaml_that_does_not_parse_is_one_line_with_the_line_number(tmp_path):
    topo = load_topology("bad", [write(tmp_path, "services:\n  web:\n    image: [unclosed\n")])
    assert topo.services == {}
    assert "does not parse" in topo.error and "line" in topo.error and "\n" not in topo.error


def test_missing_file_and_wrong_shapes_are_errors_not_exceptions(tmp_path):
    assert "cannot read compose file" in load_topology("x", [str(tmp_path / "nope.yml")]).error
    assert "not a mapping" in load_topology("x", [write(tmp_path, "- a\n- b\n")]).error
    assert "must be a mapping" in load_topology("x", [write(tmp_path, "services: [a]\n")]).error
    assert "not a valid port" in load_topology("x", [write(tmp_path, "services:\n  a:\n    ports: ['http']\n")]).error
    assert "not a valid port" in load_topology("x", [write(tmp_path, "services:\n  a:\n    ports: ['99999:80']\n")]).error


def test_empty_compose_file_is_an_app_without_services(tmp_path):
    topo = load_topology("x", [write(tmp_path, "")])
    assert topo.error == "" and topo.services == {}
