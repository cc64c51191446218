"""The stand-in's site: the admin (user ``admin``, contact 2) and ``staff`` (contact 3), who may
only ``access CiviCRM``, as in tests/cv/conftest.py."""

import sys

from gateway.sandbox.engine import Sandbox

sandbox = Sandbox(f"{sys.argv[1]}/civicrm.sandbox.sqlite")
staff = sandbox.api4(
    "Contact", "create", {"values": {"contact_type": "Individual", "first_name": "Sam", "last_name": "Staff"}}
)["values"][0]
sandbox.add_user("staff", "pw", staff["id"], ["access CiviCRM"])
sandbox.close()
