-- The backorder pipeline's own state database (bo_* tables), beside Airflow's metadata database on
-- the stack's PostgreSQL. Run once by the postgres image when its data volume is new.
CREATE DATABASE backorder;
