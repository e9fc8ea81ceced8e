"""Helpers shared by the test tiers (tests/unit, tests/integration, tests/e2e) and bench/:
harness (engine, images, enforcer process), rig (in-process daemon with fakes), sensors,
enforce, floods, fake_client (console), hostile, feed_server, demo."""
