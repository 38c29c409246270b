//! A database in the old system's schema (`../shared/LEGACY.md` §4), with
//! its traps: USD and MXN in one column, NULL `amount_mxn`, simulated rows
//! with fake `OP_` ids, synthetic `LATCOM_<ms>` ids, repeated and empty
//! references, the old `521` phone prefix, PENDING rows that never finished,
//! an IPv4-mapped allow-list, a USD and an MXN customer, and the old books
//! (adjustments, billing records, an invoice with items). Used by the import
//! tests and by `recarga-bench --import-legacy N`.

/// The old boot DDL (server.js plus add-ip-whitelist-column.js and
/// add-balance-audit-log.js), as LEGACY.md §4.2 gives it.
pub const OLD_SCHEMA: &str = "
CREATE TABLE customers (
    id SERIAL PRIMARY KEY, customer_id VARCHAR(50) UNIQUE NOT NULL, company_name VARCHAR(255),
    api_key VARCHAR(255), secret_key VARCHAR(255), credit_limit DECIMAL(10,2) DEFAULT 10000,
    current_balance DECIMAL(10,2) DEFAULT 10000, is_active BOOLEAN DEFAULT true, created_at TIMESTAMP DEFAULT NOW(),
    commission_percentage DECIMAL(5,2) DEFAULT 0, allowed_ips JSONB DEFAULT '[]', ip_whitelist_enabled BOOLEAN DEFAULT false,
    discount_rate DECIMAL(3,2) DEFAULT 0.10, active BOOLEAN DEFAULT true);
CREATE TABLE transactions (
    id SERIAL PRIMARY KEY, transaction_id VARCHAR(50) UNIQUE NOT NULL, customer_id VARCHAR(50), phone VARCHAR(20),
    amount DECIMAL(10,2), fee DECIMAL(10,2) DEFAULT 0, status VARCHAR(20), reference VARCHAR(100),
    operator_transaction_id VARCHAR(100), amount_mxn DECIMAL(10,2), amount_usd DECIMAL(10,4),
    exchange_rate DECIMAL(10,6), currency VARCHAR(10) DEFAULT 'MXN', created_at TIMESTAMP DEFAULT NOW(),
    processed_at TIMESTAMP, response_time_ms INTEGER, latcom_response_code VARCHAR(50), latcom_response_message TEXT,
    provider VARCHAR(20) DEFAULT 'latcom', provider_transaction_id VARCHAR(100), transaction_type VARCHAR(20) DEFAULT 'topup');
CREATE TABLE billing_records (
    id SERIAL PRIMARY KEY, customer_id VARCHAR(50), transaction_id VARCHAR(50), amount DECIMAL(10,2), type VARCHAR(20),
    balance_before DECIMAL(10,2), balance_after DECIMAL(10,2), created_at TIMESTAMP DEFAULT NOW());
CREATE TABLE balance_adjustments (
    id SERIAL PRIMARY KEY, customer_id VARCHAR(50) NOT NULL REFERENCES customers(customer_id), amount DECIMAL(10,2) NOT NULL,
    balance_before DECIMAL(10,2) NOT NULL, balance_after DECIMAL(10,2) NOT NULL, reason TEXT,
    adjusted_by VARCHAR(100) DEFAULT 'ADMIN', created_at TIMESTAMP DEFAULT NOW());
CREATE TABLE invoices (
    id SERIAL PRIMARY KEY, invoice_number VARCHAR(50) UNIQUE NOT NULL, customer_id VARCHAR(50), date_from TIMESTAMP,
    date_to TIMESTAMP, subtotal DECIMAL(10,2), discount_amount DECIMAL(10,2), total DECIMAL(10,2),
    commission_percentage DECIMAL(5,2), transaction_count INTEGER, status VARCHAR(20) DEFAULT 'DRAFT', notes TEXT,
    created_at TIMESTAMP DEFAULT NOW(), generated_by VARCHAR(50));
CREATE TABLE invoice_items (
    id SERIAL PRIMARY KEY, invoice_number VARCHAR(50), transaction_id VARCHAR(50), description TEXT,
    amount DECIMAL(10,2), created_at TIMESTAMP DEFAULT NOW());
";

/// The old key of ENVIADESPENSA_001 (plaintext, as the old database kept it).
pub const ENVIA_KEY: &str = "envia-despensa-live-key-2025";
/// The old key of HAZ_001.
pub const HAZ_KEY: &str = "haz-key-2025-abcdef";

/// The old data: `envia_rows` transactions for ENVIADESPENSA_001 across the
/// old eras (LEGACY §4.3), five for HAZ_001 (MXN), none for SMARTBIZ_001.
pub fn old_data(envia_rows: i64) -> String {
    format!(
        "
INSERT INTO customers (customer_id, company_name, api_key, secret_key, credit_limit, current_balance, commission_percentage,
                       allowed_ips, ip_whitelist_enabled)
VALUES ('ENVIADESPENSA_001', 'EnviaDespensa', '{ENVIA_KEY}', 'unused', 10000, 7123.45, 11.00,
        '[\"::ffff:100.64.0.3\", \"203.0.113.9\"]', true),
       ('HAZ_001', 'HAZ', '{HAZ_KEY}', 'unused', 10000, 10000.00, 0, '[]', false),
       ('SMARTBIZ_001', NULL, 'smartbiz-key-xyz-123456', NULL, 50000, 200.00, 0, '[]', false);

-- ENVIADESPENSA_001: simulated SUCCESS (2025-09-30 13:00Z, MXN, fake or no upstream id),
-- then MXN-era SUCCESS with LATCOM_<ms> ids, then USD sync SUCCESS with FX and Latcom ids,
-- every 50th of those an async PENDING (MXN in amount, FX NULL) that never finished.
INSERT INTO transactions (transaction_id, customer_id, phone, amount, status, reference, operator_transaction_id,
                          amount_mxn, amount_usd, exchange_rate, created_at, processed_at, response_time_ms,
                          latcom_response_code, latcom_response_message, provider)
SELECT 'RLR' || (1759237200000 + g * 1000)::text, 'ENVIADESPENSA_001',
       CASE WHEN g % 100 = 1 THEN '521551234' || lpad((g % 10000)::text, 4, '0') ELSE '55' || lpad(g::text, 8, '0') END,
       CASE WHEN g <= 1000 OR g % 50 = 0 THEN face ELSE round(face * 0.0541, 2) END,
       CASE WHEN g > 1000 AND g % 50 = 0 THEN 'PENDING' ELSE 'SUCCESS' END,
       CASE WHEN g % 7 = 0 THEN 'ORDER-' || (g / 14)::text WHEN g % 3 = 0 THEN '' ELSE 'REF-' || g::text END,
       CASE WHEN g <= 200 THEN (CASE WHEN g % 2 = 0 THEN 'OP_' || (1759237200000 + g)::text END)
            WHEN g <= 1000 OR g % 50 = 0 THEN 'LATCOM_' || (1759237200000 + g)::text
            ELSE 'LT' || g::text END,
       CASE WHEN g > 1000 AND g % 50 <> 0 THEN face END,
       CASE WHEN g > 1000 AND g % 50 <> 0 THEN round(face * 0.0541, 2) END,
       CASE WHEN g > 1000 AND g % 50 <> 0 THEN 0.054100 END,
       TIMESTAMP '2025-09-30 13:00:00' + g * INTERVAL '1 second',
       CASE WHEN g % 50 = 0 AND g > 1000 THEN NULL ELSE TIMESTAMP '2025-09-30 13:00:00' + g * INTERVAL '1 second' END,
       CASE WHEN g > 1000 AND g % 50 <> 0 THEN 2000 + g % 5000 END,
       'SUCCESS', 'Transaccion exitosa', 'latcom'
FROM (SELECT g, (ARRAY[10, 20, 50, 100, 200, 500])[g % 6 + 1]::numeric AS face
      FROM generate_series(1, {envia_rows}) g) s;

-- HAZ_001 (an MXN balance): unique references, one PENDING.
INSERT INTO transactions (transaction_id, customer_id, phone, amount, status, reference, operator_transaction_id,
                          amount_mxn, amount_usd, exchange_rate, created_at, processed_at)
VALUES ('RLR1760000000001', 'HAZ_001', '5512345001', 100, 'SUCCESS', 'HAZ-ORDER-1', 'LT9001', 100, NULL, NULL,
        '2025-10-09 10:00:00', '2025-10-09 10:00:00'),
       ('RLR1760000000002', 'HAZ_001', '5512345002', 50, 'SUCCESS', 'HAZ-ORDER-2', 'LT9002', 50, NULL, NULL,
        '2025-10-09 10:01:00', '2025-10-09 10:01:00'),
       ('RLR1760000000003', 'HAZ_001', '5512345003', 20, 'PENDING', 'HAZ-ORDER-3', NULL, NULL, NULL, NULL,
        '2025-10-09 10:02:00', NULL),
       ('RLR1760000000004', 'HAZ_001', '+52 55 1234 5004', 200, 'SUCCESS', '', 'LT9004', 200, NULL, NULL,
        '2025-10-09 10:03:00', '2025-10-09 10:03:00'),
       ('RLR1760000000005', 'HAZ_001', '5512345005', 30, 'SUCCESS', '{{\"order\": 5}}', 'LT9005', 30, NULL, NULL,
        '2025-10-09 10:04:00', '2025-10-09 10:04:00');

INSERT INTO balance_adjustments (customer_id, amount, balance_before, balance_after, reason, created_at)
VALUES ('ENVIADESPENSA_001', 5000.00, 2123.45, 7123.45, 'Wire 2025-10-14', '2025-10-14 09:00:00'),
       ('HAZ_001', -10.00, 10010.00, 10000.00, 'Manual adjustment', '2025-10-15 09:00:00');
INSERT INTO billing_records (customer_id, transaction_id, amount, type, balance_before, balance_after, created_at)
VALUES ('ENVIADESPENSA_001', 'RLR1759237201000', 100.00, 'debit', 10000.00, 9900.00, '2025-09-30 13:00:01'),
       ('ENVIADESPENSA_001', 'RLR1759238201000', 1.08, 'debit', 9900.00, 9898.92, '2025-09-30 13:16:41'),
       ('HAZ_001', 'RLR1760000000001', 100.00, 'debit', 10100.00, 10000.00, '2025-10-09 10:00:00');
INSERT INTO invoices (invoice_number, customer_id, date_from, date_to, subtotal, discount_amount, total,
                      commission_percentage, transaction_count, status, generated_by)
VALUES ('INV-ENVIADESPENSA_001-1760400000000', 'ENVIADESPENSA_001', '2025-10-01', '2025-10-13', 101.08, 11.12, 112.20,
        11.00, 2, 'GENERATED', 'ADMIN');
INSERT INTO invoice_items (invoice_number, transaction_id, description, amount)
VALUES ('INV-ENVIADESPENSA_001-1760400000000', 'RLR1759237201000', 'Top-up 5500000001 - 100 MXN', 100.00),
       ('INV-ENVIADESPENSA_001-1760400000000', 'RLR1759238201000', 'Top-up 5500001001 - 20 MXN', 1.08);
"
    )
}
