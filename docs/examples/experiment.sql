-- A worked A/B test on the demo data (cohortdb demo). Run it with
--   cohortdb demo -f docs/examples/experiment.sql
-- The statements are checked by tests/api.rs (api::experiment_worked_example).

DROP TABLE IF EXISTS exposures, metrics;

-- 1. Assign every user to one of three variations of the 'checkout-redesign'
--    experiment, exactly as GrowthBook's SDKs would (weights 34/33/33, hash v2).
CREATE TABLE exposures AS
SELECT user_id, ab_assign(user_id, 'checkout-redesign', [0.34, 0.33, 0.33], 1.0, 2) AS variation
FROM users;

-- 2. Revenue and conversion per exposed user. The demo data has no real
--    treatment effect, so one is planted: variation 2's revenue is 20% higher.
CREATE TABLE metrics AS
SELECT x.user_id,
       coalesce(r.revenue, 0.0) * CASE WHEN x.variation = 2 THEN 1.2 ELSE 1.0 END AS revenue,
       r.revenue IS NOT NULL AS converted
FROM exposures x
LEFT JOIN (SELECT user_id, CAST(sum(amount) AS DOUBLE) AS revenue
           FROM events WHERE event_type = 'purchase' GROUP BY user_id) r USING (user_id);

-- 3. The report: every metric of every variation against control (variation 0),
--    with the sample-ratio check against the configured weights.
SELECT metric, variation, users, round(mean, 4) AS mean,
       round(lift, 4) AS lift, round(lift_ci_low, 4) AS lift_ci_low, round(lift_ci_high, 4) AS lift_ci_high,
       round(p_value, 6) AS p_value, round(chance_to_win, 4) AS chance_to_win, srm_flag
FROM experiment_report('exposures', 'metrics', [0.34, 0.33, 0.33]);
