"""Runs localstripe (PyPI) on the port given, empty, with two changes that leave every answer as
it was and only make it faster, for the payment step's tests, the chaos suite and the benchmark:

- it saves its whole store to /tmp/localstripe.pickle after every write, which makes each request
  slower than the last (measured here: 21 intents a second at first, 4 after 1,500) and is of no
  use to a store started empty: the save is turned off (over 200 a second at first);
- every listing, and every charge's refunds (which it works out each time a PaymentIntent is
  shown), scans the whole store: a page of 100 intents took 1.6 s with 3,300 orders paid. Each
  kind of object is kept in an index of its own beside the store, and listings read that.

usage: python run-localstripe.py PORT (a name that does not hide the package)
"""

import collections
import sys

import localstripe.resources as resources

by_kind = collections.defaultdict(dict)


def setitem(store, key, value):
    dict.__setitem__(store, key, value)
    by_kind[key.split(":", 1)[0]][key] = value


def delitem(store, key):
    dict.__delitem__(store, key)
    by_kind[key.split(":", 1)[0]].pop(key, None)


def clear(store):
    dict.clear(store)
    by_kind.clear()


def list_all(cls, url, limit=None, starting_after=None, **kwargs):
    if kwargs:
        raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
    listed = resources.List(url, limit=limit, starting_after=starting_after)
    listed._list = list(by_kind[cls.object].values())
    return listed


resources.Store.dump_to_disk = lambda store: None
resources.Store.__setitem__ = setitem
resources.Store.__delitem__ = delitem
resources.Store.clear = clear
resources.StripeObject._api_list_all = classmethod(list_all)

from localstripe.server import start  # noqa: E402  (after the changes it must see)

sys.argv = ["localstripe", "--port", sys.argv[1], "--from-scratch"]
start()
