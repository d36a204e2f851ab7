"""The client side: Client, Future and the functions that wait on futures."""

from rdist.client.client import Client
from rdist.client.future import Future, as_completed, fire_and_forget, wait

__all__ = ["Client", "Future", "as_completed", "fire_and_forget", "wait"]
