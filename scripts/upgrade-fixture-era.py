"""One era of scripts/upgrade-fixture.sh: what its build is asked through
its HTTP API, and every order as it then answers.

    python3 scripts/upgrade-fixture-era.py ERA BASE_URL STATE_JSON

ERA is v1, v2 or v3; STATE_JSON maps each order's id to {era, user, order,
delivery} and is rewritten with this build's answers for every order.
"""
import json
import sys
import time
import urllib.error
import urllib.request

ERA, BASE, STATE = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]

# What each era places: (key, user, body, moves). A move is a status staff
# set, or "cancel" by the customer. Numbers as strings, a Korean name, and
# options spelled as labels are what the original clients send.
PLACED = {
    "v1": [
        ("kim-americano", "old.kim", {"coffee_name": "americano", "coffee_price": "4500", "coffee_qty": "2"},
         ["preparing", "delivering", "delivered"]),
        ("lee-latte", "old.lee", {"coffee_name": "카페라떼", "coffee_price": 5000, "coffee_qty": 1}, ["preparing"]),
        ("kim-today", "old.kim", {"coffee_name": "today's coffee", "coffee_price": 3000}, ["cancel"]),
        ("lee-espresso", "old.lee", {"coffee_name": "espresso", "coffee_price": 3500, "coffee_qty": 3}, []),
    ],
    "v2": [
        ("park-latte", "mid.park", {"coffee_name": "latte", "coffee_price": 5500, "coffee_qty": 1,
                                    "options": {"temperature": "iced", "size": "large"}}, ["preparing", "delivering"]),
        ("park-coldbrew", "mid.park", {"coffee_name": "cold brew", "coffee_price": "5000", "coffee_qty": "2",
                                       "options": {"temperature": "아이스"}}, []),
        ("kim-americano2", "old.kim", {"coffee_name": "americano", "coffee_price": 4500}, ["cancelled"]),
    ],
    "v3": [
        ("choi-vanilla", "new.choi", {"coffee_name": "vanilla latte", "coffee_price": 6000, "coffee_qty": 1,
                                      "options": {"temperature": "hot", "size": "라지"}}, ["preparing"]),
        ("choi-espresso", "new.choi", {"coffee_name": "espresso", "coffee_price": 3500, "coffee_qty": 2}, []),
    ],
}
# Earlier eras' orders this era moves on.
LATER_MOVES = {
    "v2": [("lee-espresso", "preparing")],
    "v3": [("lee-espresso", "delivering"), ("park-coldbrew", "preparing")],
}


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            json_answer = response.headers.get_content_type().endswith("json")
            return response.status, json.loads(text) if json_answer else text.decode()
    except urllib.error.HTTPError as e:
        return e.code, None


def must(method, path, body=None):
    status, answer = call(method, path, body)
    if status not in (200, 201):
        sys.exit(f"{ERA}: {method} {path} {body} answered {status}")
    return answer


def until(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.2)
    sys.exit(f"{ERA}: timed out waiting for {what}")


def up():
    try:
        return call("GET", "/health-check")[0] == 200 or None
    except OSError:
        return None


def caught_up(answer, entry):
    # The first builds' delivery answers carried no version: their status
    # then tells.
    if "version" in answer:
        return answer["version"] >= entry["version"]
    return answer["status"] == entry["status"]


def delivery_at(user, order_id, entry):
    status, answer = call("GET", f"/delivery-ms/{user}/{order_id}")
    return answer if status == 200 and caught_up(answer, entry) else None


def order_at(user, order_id, entry):
    status, answer = call("GET", f"/order-ms/{user}/orders/{order_id}")
    return answer if status == 200 and caught_up(answer, entry) else None


def move(user, order_id, to):
    if to == "cancel":
        return must("POST", f"/order-ms/{user}/orders/{order_id}/cancel")
    return must("POST", f"/delivery-ms/{user}/{order_id}/status", {"status": to})


def moved(entry, answer):
    entry["version"] += 1
    entry["status"] = answer["status"]


until("the service", up)
state = json.load(open(STATE))
by_key = {entry["key"]: (order_id, entry) for order_id, entry in state.items()}
for key, user, body, moves in PLACED.get(ERA, []):
    placed = must("POST", f"/order-ms/{user}/orders", body)
    order_id = placed["order_id"]
    state[order_id] = {"key": key, "era": ERA, "user": user, "body": body, "version": 1, "status": "received"}
    by_key[key] = (order_id, state[order_id])
    for to in moves:
        # Staff move what their board shows: the delivery side has it first.
        until(f"{key} on the delivery side", lambda: delivery_at(user, order_id, state[order_id]))
        moved(state[order_id], move(user, order_id, to))
for key, to in LATER_MOVES.get(ERA, []):
    order_id, entry = by_key[key]
    moved(entry, move(entry["user"], order_id, to))

# Every order, once both read models have caught up with its log.
for order_id, entry in state.items():
    user = entry["user"]
    entry["order"] = until(f"{entry['key']} in the order read model", lambda: order_at(user, order_id, entry))
    entry["delivery"] = until(f"{entry['key']} on the delivery side", lambda: delivery_at(user, order_id, entry))
json.dump(state, open(STATE, "w"), ensure_ascii=False, indent=1, sort_keys=True)
print(f"{ERA}: {len(state)} orders", file=sys.stderr)
