"""A client of the old system, written the way its integration guides write
theirs (the HAZ and SmartBiz Python samples): `requests`, the `x-api-key` and
`x-customer-id` headers, HTTP 200 plus `success` as the success signal, and
`error` on every failure. Nothing here knows about Recarga: only BASE_URL,
API_KEY and CUSTOMER_ID come from outside (the environment), as a customer
switching over would change them.

Run: python3 legacy_client.py SCENARIO [PHONE AMOUNT REFERENCE]
It prints one JSON line of what it saw and exits 1 when the old contract
was not kept.
"""

import json
import os
import sys
import time

import requests

BASE_URL = os.environ["RECARGA_BASE_URL"]
API_KEY = os.environ["RECARGA_API_KEY"]
CUSTOMER_ID = os.environ["RECARGA_CUSTOMER_ID"]

HEADERS = {
    "x-api-key": API_KEY,
    "x-customer-id": CUSTOMER_ID,
    "Content-Type": "application/json",
}


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def get_balance():
    response = requests.get(f"{BASE_URL}/api/balance", headers=HEADERS, timeout=30)
    data = response.json()
    if response.status_code == 200 and data["success"]:
        return data["current_balance"]
    raise RuntimeError(f"balance failed: {data['error']}")


def recharge(phone, amount, reference):
    payload = {"phone": phone, "amount": amount, "reference": reference}
    response = requests.post(
        f"{BASE_URL}/api/enviadespensa/topup", json=payload, headers=HEADERS, timeout=30
    )
    data = response.json()
    if response.status_code == 200 and data["success"]:
        transaction = data["transaction"]
        print(
            f"Top-up {transaction['id']}: {transaction['amount_mxn']} MXN, "
            f"charged {transaction['amount_usd']}, remaining {data['remaining_balance']}",
            file=sys.stderr,
        )
        return {"ok": True, "http": 200, "data": data}
    print(f"Top-up failed ({response.status_code}): {data['error']}", file=sys.stderr)
    return {"ok": False, "http": response.status_code, "data": data}


def recharge_async(phone, amount, reference):
    payload = {"phone": phone, "amount": amount, "reference": reference}
    response = requests.post(
        f"{BASE_URL}/api/enviadespensa/topup-async", json=payload, headers=HEADERS, timeout=30
    )
    data = response.json()
    if response.status_code == 200 and data["success"]:
        return data
    raise RuntimeError(f"queueing failed ({response.status_code}): {data['error']}")


def check_status(transaction_id, with_credentials=True):
    headers = HEADERS if with_credentials else {}
    response = requests.get(
        f"{BASE_URL}/api/transaction/{transaction_id}", headers=headers, timeout=30
    )
    return response.status_code, response.json()


def fail(message, seen):
    seen["problem"] = message
    print(json.dumps(seen))
    sys.exit(1)


def main():
    scenario = sys.argv[1]
    phone, amount, reference = (sys.argv[2:5] + [None, None, None])[:3]
    if amount is not None:
        amount = float(amount) if "." in amount else int(amount)
    seen = {"scenario": scenario}

    if scenario == "balance":
        balance = get_balance()
        seen["balance"] = balance
        if not is_number(balance):
            fail("current_balance is not a number", seen)

    elif scenario == "sync_success":
        before = get_balance()
        # The SmartBiz sample refuses to top up unless the balance is above 10.
        if not before > 10:
            fail("balance too low for the sample", seen)
        result = recharge(phone, amount, reference)
        seen.update(result)
        if not result["ok"]:
            fail("the top-up did not succeed", seen)
        transaction = result["data"]["transaction"]
        if transaction["status"] != "SUCCESS":
            fail("status is not SUCCESS", seen)
        for field in ("amount_mxn", "amount_usd", "exchange_rate"):
            if not is_number(transaction[field]):
                fail(f"transaction.{field} is not a number", seen)
        if transaction["amount_mxn"] != amount:
            fail("amount_mxn is not the amount sent", seen)
        if not isinstance(transaction["operatorTransactionId"], str):
            fail("no operatorTransactionId", seen)
        remaining = result["data"]["remaining_balance"]
        if not is_number(remaining) or abs(get_balance() - remaining) > 0.001:
            fail("remaining_balance is not the balance", seen)

    elif scenario == "sync_failure":
        before = get_balance()
        result = recharge(phone, amount, reference)
        seen.update(result)
        if result["ok"] or result["http"] != 500:
            fail("a definite failure must be HTTP 500 with success false", seen)
        if not result["data"]["error"].startswith("Provider ("):
            fail("the old failure text is missing", seen)
        if not is_number(result["data"]["response_time_ms"]):
            fail("response_time_ms is not a number", seen)
        if get_balance() != before:
            fail("a failed top-up moved the balance", seen)

    elif scenario == "insufficient":
        result = recharge(phone, amount, reference)
        seen.update(result)
        data = result["data"]
        if result["ok"] or result["http"] != 403 or data["error"] != "Insufficient balance":
            fail("expected 403 Insufficient balance", seen)
        if not (is_number(data["current_balance_usd"]) and is_number(data["required_usd"])):
            fail("the balance figures are not numbers", seen)

    elif scenario == "invalid_amount":
        result = recharge(phone, amount, reference)
        seen.update(result)
        data = result["data"]
        if result["http"] != 400:
            fail("expected HTTP 400", seen)
        if data["error"] == "Validation failed":
            if not isinstance(data["details"], list) or not data["details"]:
                fail("Validation failed without details", seen)
        elif data["error"] == "Invalid product amount":
            if not all(is_number(a) for a in data["allowed_amounts"]):
                fail("allowed_amounts are not numbers", seen)
            if not is_number(data["requested_amount"]):
                fail("requested_amount is not a number", seen)
        else:
            fail("unexpected error text", seen)

    elif scenario == "daily_limit":
        result = recharge(phone, amount, reference)
        seen.update(result)
        data = result["data"]
        if result["http"] != 429 or data["error"] != "Daily transaction limit exceeded":
            fail("expected 429 Daily transaction limit exceeded", seen)
        for field in ("daily_limit_mxn", "used_today_mxn", "requested_mxn", "available_mxn"):
            if not is_number(data[field]):
                fail(f"{field} is not a number", seen)

    elif scenario in ("async_poll", "async_poll_public"):
        queued = recharge_async(phone, amount, reference)
        transaction_id = queued["transaction"]["id"]
        seen["queued_status"] = queued["transaction"]["status"]
        if queued["transaction"]["status"] != "PENDING":
            fail("a queued top-up is PENDING", seen)
        with_credentials = scenario == "async_poll"
        statuses = []
        deadline = time.time() + 30
        while time.time() < deadline:
            code, data = check_status(transaction_id, with_credentials)
            if code != 200 or not data["success"]:
                fail(f"status lookup answered {code}", seen)
            status = data["transaction"]["status"]
            statuses.append(status)
            if status not in ("PENDING", "SUCCESS", "FAILED"):
                fail(f"unknown status word {status}", seen)
            if status in ("SUCCESS", "FAILED"):
                break
            time.sleep(0.3)
        seen["statuses"] = statuses
        seen["final"] = data["transaction"]
        if statuses[-1] != "SUCCESS":
            fail("the top-up did not end SUCCESS", seen)
        if not isinstance(data["transaction"]["amount"], str):
            fail("amounts on the status route are strings", seen)

    elif scenario == "status_private":
        queued = recharge_async(phone, amount, reference)
        code, data = check_status(queued["transaction"]["id"], with_credentials=False)
        seen["http"] = code
        seen["data"] = data
        if code != 401 or data["success"] is not False or not isinstance(data["error"], str):
            fail("a private status read without credentials is refused", seen)

    else:
        fail("unknown scenario", seen)

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
