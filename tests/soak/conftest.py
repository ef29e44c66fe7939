def pytest_configure(config):
    config.addinivalue_line("markers", "soak: load and soak tests (part of the default suite; select with -m soak)")
