"""A small order-taking app that exists to demonstrate and dogfood pytest-neon-alembic.

It is deliberately shaped like real application code: the service functions open
their own sessions from a module-level engine and commit, so tests can only stay
independent if every test gets its own database branch.
"""
