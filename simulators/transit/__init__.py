"""Public transport to test against: a generated Lviv network (``network``) and its buses' day (``buses``)."""
