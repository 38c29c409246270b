// A client of the old system in JavaScript, written the way its guides'
// Node samples are: Node's own fetch, the x-api-key and x-customer-id
// headers, HTTP 200 plus `success` as the success signal, `error` on every
// failure. Only BASE_URL, API_KEY and CUSTOMER_ID come from outside.
//
// Run: node legacy_client.mjs SCENARIO [PHONE AMOUNT REFERENCE]
// Prints one JSON line of what it saw; exits 1 when the old contract broke.

const BASE_URL = process.env.RECARGA_BASE_URL;
const API_KEY = process.env.RECARGA_API_KEY;
const CUSTOMER_ID = process.env.RECARGA_CUSTOMER_ID;

const headers = {
  'x-api-key': API_KEY,
  'x-customer-id': CUSTOMER_ID,
  'Content-Type': 'application/json',
};

const isNumber = (v) => typeof v === 'number';

async function getBalance() {
  const response = await fetch(`${BASE_URL}/api/balance`, { headers });
  const data = await response.json();
  if (response.status === 200 && data.success) return data.current_balance;
  throw new Error(`balance failed: ${data.error}`);
}

async function post(path, phone, amount, reference) {
  const response = await fetch(`${BASE_URL}${path}`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ phone, amount, reference }),
  });
  return { http: response.status, data: await response.json() };
}

async function checkStatus(id, withCredentials) {
  const response = await fetch(`${BASE_URL}/api/transaction/${id}`, {
    headers: withCredentials ? headers : {},
  });
  return { http: response.status, data: await response.json() };
}

function fail(message, seen) {
  seen.problem = message;
  console.log(JSON.stringify(seen));
  process.exit(1);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const [scenario, phone, amountText, reference] = process.argv.slice(2);
  const amount = amountText === undefined ? undefined : Number(amountText);
  const seen = { scenario };

  if (scenario === 'balance') {
    seen.balance = await getBalance();
    if (!isNumber(seen.balance)) fail('current_balance is not a number', seen);
  } else if (scenario === 'sync_success') {
    const { http, data } = await post('/api/enviadespensa/topup', phone, amount, reference);
    Object.assign(seen, { http, data });
    if (!(http === 200 && data.success)) fail('the top-up did not succeed', seen);
    const tx = data.transaction;
    if (tx.status !== 'SUCCESS') fail('status is not SUCCESS', seen);
    if (!isNumber(tx.amount_mxn) || tx.amount_mxn !== amount) fail('amount_mxn', seen);
    if (!isNumber(tx.amount_usd) || !isNumber(data.remaining_balance)) fail('amounts are numbers', seen);
    // `+` on numbers adds (on the old status strings it concatenated).
    if (data.billing.balance_after_usd + data.billing.deducted_usd !== data.billing.balance_before_usd) {
      fail('billing does not add up', seen);
    }
    if (Math.abs((await getBalance()) - data.remaining_balance) > 0.001) fail('remaining_balance', seen);
  } else if (scenario === 'sync_failure') {
    const before = await getBalance();
    const { http, data } = await post('/api/enviadespensa/topup', phone, amount, reference);
    Object.assign(seen, { http, data });
    if (data.success !== false || http !== 500) fail('a definite failure is 500, success false', seen);
    if (!data.error.startsWith('Provider (')) fail('the old failure text', seen);
    if ((await getBalance()) !== before) fail('a failure moved the balance', seen);
  } else if (scenario === 'insufficient') {
    const { http, data } = await post('/api/enviadespensa/topup', phone, amount, reference);
    Object.assign(seen, { http, data });
    if (http !== 403 || data.error !== 'Insufficient balance') fail('expected 403', seen);
    if (!isNumber(data.current_balance_usd) || !isNumber(data.required_usd)) fail('figures', seen);
  } else if (scenario === 'invalid_amount') {
    const { http, data } = await post('/api/enviadespensa/topup', phone, amount, reference);
    Object.assign(seen, { http, data });
    if (http !== 400) fail('expected 400', seen);
    if (data.error === 'Validation failed') {
      if (!Array.isArray(data.details) || data.details.length === 0) fail('details', seen);
    } else if (data.error === 'Invalid product amount') {
      if (!data.allowed_amounts.every(isNumber) || !isNumber(data.requested_amount)) fail('amounts', seen);
    } else {
      fail('unexpected error text', seen);
    }
  } else if (scenario === 'daily_limit') {
    const { http, data } = await post('/api/enviadespensa/topup', phone, amount, reference);
    Object.assign(seen, { http, data });
    if (http !== 429 || data.error !== 'Daily transaction limit exceeded') fail('expected 429', seen);
    for (const f of ['daily_limit_mxn', 'used_today_mxn', 'requested_mxn', 'available_mxn']) {
      if (!isNumber(data[f])) fail(`${f} is not a number`, seen);
    }
  } else if (scenario === 'async_poll' || scenario === 'async_poll_public') {
    const queued = await post('/api/enviadespensa/topup-async', phone, amount, reference);
    if (queued.http !== 200 || !queued.data.success) fail('queueing failed', queued);
    const id = queued.data.transaction.id;
    seen.queued_status = queued.data.transaction.status;
    const statuses = [];
    const deadline = Date.now() + 30000;
    let last;
    while (Date.now() < deadline) {
      last = await checkStatus(id, scenario === 'async_poll');
      if (last.http !== 200 || !last.data.success) fail(`status answered ${last.http}`, seen);
      const status = last.data.transaction.status;
      statuses.push(status);
      if (!['PENDING', 'SUCCESS', 'FAILED'].includes(status)) fail(`unknown status ${status}`, seen);
      if (status !== 'PENDING') break;
      await sleep(300);
    }
    seen.statuses = statuses;
    seen.final = last.data.transaction;
    if (statuses[statuses.length - 1] !== 'SUCCESS') fail('did not end SUCCESS', seen);
    if (typeof last.data.transaction.amount !== 'string') fail('status amounts are strings', seen);
  } else if (scenario === 'status_private') {
    const queued = await post('/api/enviadespensa/topup-async', phone, amount, reference);
    const { http, data } = await checkStatus(queued.data.transaction.id, false);
    Object.assign(seen, { http, data });
    if (http !== 401 || data.success !== false || typeof data.error !== 'string') fail('expected 401', seen);
  } else {
    fail('unknown scenario', seen);
  }
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.log(JSON.stringify({ problem: String(e) }));
  process.exit(1);
});
