from __future__ import annotations

from shelfwise.errors import AlreadyExists, NotFound


class LocationNotFound(NotFound):
    code = "location_not_found"
    title = "Location not found"


class LocationCodeTaken(AlreadyExists):
    code = "location_code_taken"
    title = "Location code already in use"
