CREATE TABLE users (user_id BIGINT NOT NULL, city TEXT, age INT, spend NUMERIC(12,2), vip BOOLEAN, signup DATE, seen TIMESTAMP);
INSERT INTO users VALUES
  (1, 'beijing', 25, 100.50, true, '2024-01-01', '2026-01-01 10:00:00'),
  (2, 'shanghai', 34, NULL, false, '2024-02-01', '2026-01-02 12:30:00.25'),
  (3, 'beijing', 41, 7.25, NULL, NULL, NULL),
  (4, NULL, 19, 0.00, true, '2025-06-30', '2026-02-01 00:00:00'),
  (5, 'xian', NULL, 1234.99, false, '2025-12-31', '2026-03-15 23:59:59');
CREATE TABLE events (user_id BIGINT NOT NULL, kind TEXT NOT NULL, amount DOUBLE PRECISION, ts TIMESTAMP NOT NULL);
INSERT INTO events VALUES
  (1, 'view', NULL, '2026-01-01 10:00:00'),
  (1, 'purchase', 20.5, '2026-01-03 09:00:00'),
  (2, 'purchase', 15.25, '2026-01-02 12:30:00'),
  (3, 'view', NULL, '2026-02-01 00:00:00'),
  (3, 'purchase', 100, '2026-02-02 00:00:00'),
  (3, 'purchase', 0.1, '2026-02-03 00:00:00'),
  (5, 'click', NULL, '2026-03-01 08:00:00');
