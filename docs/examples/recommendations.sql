-- Recommendations on the demo data: docs/recommendations.md walks through it.
-- Run it with: cohortdb demo -f docs/examples/recommendations.sql

-- 1. The interactions: every event on an item, a purchase weighing 5, an
--    add-to-cart 2, a view or click 1 (a user's repeats add up).
CREATE TABLE IF NOT EXISTS interactions
  (user_id BIGINT USER KEY, item_id BIGINT, weight DOUBLE PRECISION, ts TIMESTAMP);
DELETE FROM interactions;
INSERT INTO interactions
SELECT user_id, item_id,
       CASE event_type WHEN 'purchase' THEN 5 WHEN 'add_to_cart' THEN 2 ELSE 1 END, ts
FROM events;

-- 2. The recommender: item-kNN, each item keeping its 200 most similar items.
CREATE OR REPLACE RECOMMENDER for_you ON interactions (user_id, item_id, weight, ts)
  USING item_knn 'neighbours=200';

SELECT name, algorithm, users, items, interactions FROM cohortdb_recommenders;

-- 3. A user's top 5, with the item of their history behind each.
SELECT r.rank, r.item_id, i.category, round(r.score, 3) AS score,
       r.reason_item_id, ri.category AS reason_category, r.source
FROM recommend('for_you', 4242, 5) r
JOIN items i ON i.item_id = r.item_id
LEFT JOIN items ri ON ri.item_id = r.reason_item_id
ORDER BY r.rank;

-- 4. Why the first one, item 1: the history items that add most to its score.
SELECT history_item_id, weight, round(contribution, 3) AS contribution, round(share, 3) AS share
FROM explain_recommendation('for_you', 4242, 1, 3);

-- 5. A campaign list: for VIP users in Beijing, three items each, at most one
--    per category, books boosted by half.
SELECT user_id, rank, item_id, round(score, 3) AS score
FROM recommend_batch('for_you', 'city=beijing AND spend_tier=vip', 3,
       'per_category=1, categories=(SELECT item_id, category FROM items),
        boost=(SELECT item_id, 1.5 FROM items WHERE category = ''books'')')
ORDER BY user_id, rank LIMIT 9;

-- 6. Items bought with item 1, and what Beijing buys most.
SELECT item_id, round(score, 3) AS score, co_count, round(confidence, 3) AS confidence,
       round(lift, 2) AS lift
FROM similar_items('for_you', 1, 3);

SELECT item_id, score, users FROM popular_items('for_you', 3, 'audience=city=beijing');
