"""Date formats of English pages: timestamps to the second, sortable (the admin's defaults stop at the minute).

Found through ``FORMAT_MODULE_PATH``; formats not named here are Django's own for English.
"""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
