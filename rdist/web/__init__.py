"""The live dashboard: a Flask-SocketIO app that reads the cluster's Redis and nothing else."""

from rdist.web.app import create_app
from rdist.web.serve import DashboardServer, run_dashboard

__all__ = ["DashboardServer", "create_app", "run_dashboard"]
