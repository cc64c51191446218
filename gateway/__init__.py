"""civicrm-gateway: reach CiviCRM APIv4/APIv3 from anything that speaks HTTP."""

__version__ = "0.1.0"
