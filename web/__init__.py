"""Hydra's live page: a Flask app with Flask-SocketIO, made by :func:`web.app.create_app`."""
