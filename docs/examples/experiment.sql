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
SELECT x.user_id, x.variation,
       coalesce(r.revenue, 0.0) * CASE WHEN x.variation = 2 THEN 1.2 ELSE 1.0 END AS revenue,
       CASE WHEN r.revenue IS NULL THEN 0 ELSE 1 END AS converted
FROM exposures x
LEFT JOIN (SELECT user_id, CAST(sum(amount) AS DOUBLE) AS revenue
           FROM events WHERE event_type = 'purchase' GROUP BY user_id) r USING (user_id);

-- 3. The report: each treatment against control (variation 0), with the
--    sample-ratio check over all variations.
WITH per_variation AS (
  SELECT variation, metric_moments(revenue) AS m, sum(converted) AS conversions
  FROM metrics GROUP BY variation
),
control AS (SELECT m AS c, conversions AS c_conv FROM per_variation WHERE variation = 0),
srm AS (
  SELECT srm_test(array_agg(m['n'] ORDER BY variation), [0.34, 0.33, 0.33])['p_value'] AS srm_p
  FROM per_variation
),
tests AS (
  SELECT t.variation, t.m['n'] AS users, t.m['mean'] AS revenue_per_user,
         welch_test_stats(c['n'], c['mean'], c['variance'], t.m['n'], t.m['mean'], t.m['variance']) AS w,
         bayes_test_stats(c['n'], c['mean'], c['variance'], t.m['n'], t.m['mean'], t.m['variance']) AS b,
         proportion_test_stats(c['n'], c_conv, t.m['n'], t.conversions) AS conv
  FROM per_variation t, control
  WHERE t.variation <> 0
)
SELECT variation, users, round(revenue_per_user, 3) AS revenue_per_user,
       round(w['rel_estimate'], 4) AS lift, round(w['rel_ci_low'], 4) AS lift_ci_low,
       round(w['rel_ci_high'], 4) AS lift_ci_high, round(w['rel_p_value'], 6) AS p_value,
       round(b['chance_to_win'], 4) AS chance_to_win,
       round(conv['rel_estimate'], 4) AS conversion_lift, round(conv['p_value'], 4) AS conversion_p,
       srm_p < 0.001 AS srm_flag
FROM tests, srm
ORDER BY variation;
