"""A mule that waits for messages until it is stopped; tests/privileges.rs reads its ids from
/proc."""

import uwsgi

while True:
    uwsgi.mule_get_msg()
