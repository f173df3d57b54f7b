-- A lookalike audience on the demo data: docs/lookalike.md walks through it.
-- Run it with: cohortdb demo -f docs/examples/lookalike.sql

-- 1. The seed: every user who bought a book.
CREATE OR REPLACE TAG book_buyers AS
SELECT DISTINCT e.user_id FROM events e JOIN items i ON e.item_id = i.item_id
WHERE i.category = 'books' AND e.event_type = 'purchase';

SELECT audience_count('book_buyers') AS seed_users;

-- 2. What sets them apart: the audience insights.
SELECT tag, seed_users, population_users, round(lift, 2) AS lift, round(weight, 3) AS weight
FROM lookalike_weights('book_buyers') ORDER BY weight DESC LIMIT 8;

-- 3. How well each scorer finds buyers it was not shown (10 splits, half the
-- seed hidden each time).
SELECT method, round(auc, 3) AS auc, round(auc_stddev, 3) AS auc_stddev,
       round(lift_at_10, 2) AS lift_at_10, round(recall_at_20, 3) AS recall_at_20
FROM lookalike_eval('book_buyers', 'method=all');

-- 4. Expand to 5% of the population and keep the result as a tag.
CREATE OR REPLACE TAG book_lookalikes AS
SELECT user_id FROM lookalike('book_buyers', 'size=5%');

SELECT audience_count('book_lookalikes') AS lookalikes,
       audience_count('book_lookalikes AND event_type=purchase') AS of_them_purchasers;

-- 5. A model to score users later without retraining, and why it likes one.
CREATE OR REPLACE MODEL book_like AS LOOKALIKE('book_buyers');

SELECT user_id, round(lookalike_score('book_like', user_id), 3) AS score
FROM audience('book_lookalikes') ORDER BY score DESC, user_id LIMIT 3;

SELECT tag, round(weight, 3) AS weight, round(lift, 2) AS lift
FROM lookalike_explain('book_like', 62250, 5);
