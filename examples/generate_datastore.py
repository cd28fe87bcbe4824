#!/usr/bin/env python3
"""Generates examples/datastore.json: a small meeting-management datastore.

The output is a JSON array of write requests (SPEC section 5.1), one request
(= one position) per line, valid in order, for
`POST /internal/datastore/writer/write`. It is deterministic: no clock, no
`random`, only arithmetic on the loop counters, so running this script again
reproduces the committed file byte for byte (`--check` verifies that).

What it contains, and why:

- an organization, committees, meetings, users, tags, motions and agenda
  items, with the back-relations a meeting backend keeps (`meeting.motion_ids`
  and friends) maintained through `list_fields` add/remove;
- updates that set fields, remove fields (`null`) and change lists; deletes
  and restores (some motions stay deleted);
- the first request carries `migration_index: 1`, so with the migrations of
  examples/migrations.json (target index 4) every position has work to do:
  * `0002`: `motion.title` -> `name`: every motion create has a `title`;
  * `0003`: `motion.weight` default 0 and `legacy` removed: some motion
    creates carry `weight`, most do not; some creates and updates carry
    `legacy`, always next to another field, so no position loses all its
    events to the migration;
  * `0004`: `motion.name` required on create: holds, thanks to `0002`.
  The migrations therefore succeed on this datastore.

A small in-memory model of SPEC section 5's rules checks every event while
generating, so an invalid example fails here, not in front of an operator.

Usage: python3 examples/generate_datastore.py [--check]
"""

import copy
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datastore.json")

ADMIN = 1
USERS = 48
MEETINGS = 3
MOTIONS_PER_MEETING = 40
TAGS_PER_MEETING = 4

FIRST_NAMES = ["Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hamza",
               "Ingrid", "Jonas", "Kemal", "Lena", "Mateo", "Nadia", "Oskar", "Priya"]
LAST_NAMES = ["Schmidt", "Okafor", "Rossi", "Novak", "Yilmaz", "Haddad", "Larsen",
              "Costa", "Weber", "Tanaka", "Dubois", "Kowalski"]
MEETING_NAMES = ["Annual General Assembly 2024", "Board Meeting Spring",
                 "Youth Delegates Conference"]
TOPICS = ["budget", "bylaws", "climate policy", "membership fees", "digital voting",
          "travel allowance", "annual report", "elections procedure", "youth work",
          "press relations", "volunteer training", "accessibility"]
TAG_NAMES = ["finance", "organisation", "urgent", "international"]
STATES = ["submitted", "permitted", "accepted", "rejected", "referred"]


def spread(i, n, salt=0):
    """A deterministic, well-mixed pick in range(n)."""
    return ((i + 1) * 2654435761 + salt * 40503) % 4294967296 % n


class Store:
    """The models of SPEC section 5, only to check the generated events."""

    def __init__(self):
        self.live = {}
        self.deleted = {}
        self.requests = []

    def request(self, events, information, user_id=ADMIN):
        for event in events:
            self.check(event)
        request = {"user_id": user_id, "information": information, "events": events}
        if not self.requests:
            request = {"user_id": user_id, "information": information,
                       "migration_index": 1, "events": events}
        self.requests.append(request)

    def check(self, event):
        # A deep copy: the models must never share a list with an event that
        # is already written, or `listfields` would change the output.
        event = copy.deepcopy(event)
        kind, fqid = event["type"], event["fqid"]
        if kind == "create":
            assert fqid not in self.live and fqid not in self.deleted, fqid
            self.live[fqid] = {k: v for k, v in event["fields"].items() if v is not None}
        elif kind == "update":
            assert fqid in self.live, fqid
            model = self.live[fqid]
            for name, value in event.get("fields", {}).items():
                if value is None:
                    model.pop(name, None)
                else:
                    model[name] = value
            lists = event.get("list_fields", {})
            for name, values in lists.get("add", {}).items():
                current = model.setdefault(name, [])
                assert isinstance(current, list), (fqid, name)
                current.extend(v for v in values if v not in current)
            for name, values in lists.get("remove", {}).items():
                if name in model:
                    model[name] = [v for v in model[name] if v not in values]
        elif kind == "delete":
            assert fqid in self.live, fqid
            self.deleted[fqid] = self.live.pop(fqid)
        elif kind == "restore":
            assert fqid in self.deleted, fqid
            self.live[fqid] = self.deleted.pop(fqid)
        else:
            raise AssertionError(kind)


def create(fqid, **fields):
    return {"type": "create", "fqid": fqid, "fields": fields}


def update(fqid, fields=None, add=None, remove=None):
    event = {"type": "update", "fqid": fqid, "fields": fields or {}}
    if add or remove:
        event["list_fields"] = {"add": add or {}, "remove": remove or {}}
    return event


def delete(fqid):
    return {"type": "delete", "fqid": fqid}


def restore(fqid):
    return {"type": "restore", "fqid": fqid}


def action(name):
    return {"action": name}


def generate():
    store = Store()

    # The organization, its committees (one per meeting) and the admin.
    store.request([
        create("organization/1", name="Example Federation", description="Demo data",
               committee_ids=list(range(1, MEETINGS + 1)), active_meeting_ids=[],
               user_ids=[ADMIN]),
        *[create(f"committee/{c}", name=f"Committee {c}", organization_id=1, meeting_ids=[])
          for c in range(1, MEETINGS + 1)],
        create(f"user/{ADMIN}", username="admin", first_name="Admin", last_name="",
               is_active=True, organization_management_level="superadmin",
               organization_id=1, meeting_ids=[]),
    ], action("organization.initial_import"))

    # Users, a few per request, with the organization's back-relation.
    for first in range(2, USERS + 1, 6):
        ids = list(range(first, min(first + 6, USERS + 1)))
        events = []
        for uid in ids:
            first_name = FIRST_NAMES[spread(uid, len(FIRST_NAMES))]
            last_name = LAST_NAMES[spread(uid, len(LAST_NAMES), 1)]
            events.append(create(
                f"user/{uid}", username=f"{first_name.lower()}.{last_name.lower()}{uid}",
                first_name=first_name, last_name=last_name, is_active=True,
                email=f"{first_name.lower()}.{uid}@example.org",
                organization_id=1, meeting_ids=[]))
        events.append(update("organization/1", add={"user_ids": ids}))
        store.request(events, action("user.create"))

    # Meetings with their tags.
    for m in range(1, MEETINGS + 1):
        tag_ids = [(m - 1) * TAGS_PER_MEETING + t for t in range(1, TAGS_PER_MEETING + 1)]
        store.request([
            create(f"meeting/{m}", name=MEETING_NAMES[m - 1], committee_id=m,
                   is_active_in_organization_id=1, start_time=1717200000 + m * 86400 * 30,
                   location="Main hall" if m != 2 else "Room 4",
                   motion_ids=[], agenda_item_ids=[], user_ids=[], tag_ids=tag_ids),
            *[create(f"tag/{tag}", name=TAG_NAMES[(tag - 1) % TAGS_PER_MEETING], meeting_id=m)
              for tag in tag_ids],
            update(f"committee/{m}", add={"meeting_ids": [m]}),
            update("organization/1", add={"active_meeting_ids": [m]}),
        ], action("meeting.create"))

    # Participants: every user joins one or two meetings.
    members = {m: [] for m in range(1, MEETINGS + 1)}
    for uid in range(2, USERS + 1):
        joined = sorted({1 + spread(uid, MEETINGS), 1 + spread(uid, MEETINGS, 7)})
        for m in joined:
            members[m].append(uid)
    for m in range(1, MEETINGS + 1):
        for chunk in range(0, len(members[m]), 8):
            uids = members[m][chunk:chunk + 8]
            events = [update(f"user/{uid}", add={"meeting_ids": [m]}) for uid in uids]
            events.append(update(f"meeting/{m}", add={"user_ids": uids}))
            store.request(events, action("meeting.add_participants"))

    # Motions, each with its agenda item, created one per request (as a
    # meeting backend's `motion.create` action does).
    motion_meeting = {}
    motion_id = 0
    for round_ in range(MOTIONS_PER_MEETING):
        for m in range(1, MEETINGS + 1):
            motion_id += 1
            motion_meeting[motion_id] = m
            submitter = members[m][spread(motion_id, len(members[m]))]
            topic = TOPICS[spread(motion_id, len(TOPICS), 3)]
            fields = {
                "title": f"Motion on {topic} ({motion_id})",
                "number": f"M{m}-{round_ + 1:03d}",
                "text": f"<p>The assembly resolves to revise the {topic} as proposed.</p>",
                "reason": f"The current rules on {topic} are outdated.",
                "meeting_id": m,
                "state": "submitted",
                "submitter_ids": [submitter],
                "tag_ids": [(m - 1) * TAGS_PER_MEETING + 1 + spread(motion_id, TAGS_PER_MEETING, 5)],
                "agenda_item_id": motion_id,
            }
            if motion_id % 5 == 0:
                fields["weight"] = motion_id * 10
            if motion_id % 4 == 1:
                fields["legacy"] = {"imported_from": "openslides-3", "old_id": 9000 + motion_id}
            store.request([
                create(f"motion/{motion_id}", **fields),
                create(f"agenda_item/{motion_id}", content_object_id=f"motion/{motion_id}",
                       meeting_id=m, item_number=f"{round_ + 1}", weight=round_ + 1,
                       closed=False),
                update(f"meeting/{m}", add={"motion_ids": [motion_id],
                                            "agenda_item_ids": [motion_id]}),
            ], action("motion.create"), user_id=submitter)
    motions = motion_id

    # Editing: new titles, removed and replaced fields, tag changes, states.
    for n in range(1, 91):
        mid = 1 + spread(n, motions, 11)
        fqid = f"motion/{mid}"
        if fqid not in store.live:
            continue
        m = motion_meeting[mid]
        kind = n % 6
        if kind == 0:
            event = update(fqid, {"title": f"Amended: {store.live[fqid]['title']}"[:120],
                                  "reason": None})
        elif kind == 1:
            tag = (m - 1) * TAGS_PER_MEETING + 1 + spread(n, TAGS_PER_MEETING, 13)
            event = update(fqid, {"state": "permitted"}, add={"tag_ids": [tag]})
        elif kind == 2:
            current = store.live[fqid].get("tag_ids", [])
            event = update(fqid, {"text": None, "modified_final_version": "<p>Final.</p>"},
                           remove={"tag_ids": current[:1]} if current else None)
        elif kind == 3:
            # `legacy` only ever travels with another field (see the docstring).
            event = update(fqid, {"state": STATES[spread(n, len(STATES), 17)],
                                  "legacy": {"reviewed": True}})
        elif kind == 4:
            supporter = members[m][spread(n, len(members[m]), 19)]
            event = update(fqid, {"supporter_ids": [supporter]},
                           add={"submitter_ids": [supporter]})
        else:
            event = update(fqid, {"title": f"{store.live[fqid]['title']} (revised)"[:120],
                                  "legacy": None})
        store.request([event], action("motion.update"))

    # Withdrawn motions: deleted with their agenda items; some come back.
    withdrawn = [mid for mid in range(7, motions + 1, 11)]
    for mid in withdrawn:
        m = motion_meeting[mid]
        store.request([
            delete(f"motion/{mid}"),
            delete(f"agenda_item/{mid}"),
            update(f"meeting/{m}", remove={"motion_ids": [mid], "agenda_item_ids": [mid]}),
        ], action("motion.delete"))
    for mid in withdrawn[::2]:
        m = motion_meeting[mid]
        store.request([
            restore(f"motion/{mid}"),
            restore(f"agenda_item/{mid}"),
            update(f"meeting/{m}", add={"motion_ids": [mid], "agenda_item_ids": [mid]}),
        ], action("motion.restore"))
        store.request([update(f"motion/{mid}", {"state": "submitted", "number": None})],
                      action("motion.reset_state"))

    # Agenda: close the first items of every meeting.
    for m in range(1, MEETINGS + 1):
        items = [aid for aid in range(1, motions + 1)
                 if motion_meeting[aid] == m and f"agenda_item/{aid}" in store.live][:10]
        store.request([update(f"agenda_item/{aid}", {"closed": True}) for aid in items],
                      action("agenda_item.update"))

    # Users: deactivations, removed e-mail addresses, one deleted and
    # restored, one deleted for good.
    for uid in range(3, USERS + 1, 7):
        store.request([update(f"user/{uid}", {"is_active": False, "email": None})],
                      action("user.update"))
    for uid in (USERS, USERS - 1):
        store.request([delete(f"user/{uid}"),
                       update("organization/1", remove={"user_ids": [uid]})],
                      action("user.delete"))
    store.request([restore(f"user/{USERS}"),
                   update("organization/1", add={"user_ids": [USERS]})],
                  action("user.restore"))

    # The last meeting ends: it leaves the organization's active meetings.
    store.request([
        update(f"meeting/{MEETINGS}", {"is_active_in_organization_id": None,
                                       "end_time": 1717200000 + MEETINGS * 86400 * 30 + 7200}),
        update("organization/1", remove={"active_meeting_ids": [MEETINGS]}),
    ], action("meeting.archive"))

    return store.requests


def render(requests):
    lines = [json.dumps(request, ensure_ascii=False, separators=(", ", ": "))
             for request in requests]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def main():
    requests = generate()
    text = render(requests)
    if len(text.encode()) >= 1024 * 1024:
        sys.exit("datastore.json would exceed the write route's 1 MiB body limit")
    if sys.argv[1:] == ["--check"]:
        with open(OUT, encoding="utf-8") as file:
            if file.read() != text:
                sys.exit("examples/datastore.json differs from the generator's output")
        print("examples/datastore.json is up to date")
        return
    with open(OUT, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {OUT}: {len(requests)} write requests, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
