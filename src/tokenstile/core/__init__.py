"""The token lifecycle: pure logic, no web framework, no database driver."""
