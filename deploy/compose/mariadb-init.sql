-- The sample database of the Compose sandbox in MariaDB, run once by the
-- mariadb image's entrypoint (as root) when its data volume is new, after
-- 10-airlock-users.sh made the two upstream users. The same tables as
-- `airlock demo`'s MariaDB (crates/airlock/src/demo_mariadb.rs) with data of
-- the same shape: names, emails derived from them, SSN-formatted strings,
-- Luhn-valid test card numbers and UUIDs (generated here, so the values
-- differ from the PostgreSQL side).

SET NAMES utf8mb4;
CREATE DATABASE IF NOT EXISTS demo;
USE demo;

CREATE TABLE customers (
  id BIGINT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200) NOT NULL UNIQUE,
  ssn VARCHAR(11) NOT NULL,
  card_number VARCHAR(19) NOT NULL,
  external_id CHAR(36) NOT NULL UNIQUE
) DEFAULT CHARSET = utf8mb4;

CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  customer_id BIGINT NOT NULL REFERENCES customers (id),
  amount DECIMAL(10, 2) NOT NULL,
  status VARCHAR(16) NOT NULL,
  created_at DATETIME NOT NULL,
  KEY (customer_id)
) DEFAULT CHARSET = utf8mb4;

-- `digits` followed by its Luhn check digit; dropped at the end.
DELIMITER //
CREATE FUNCTION airlock_seed_luhn(digits VARCHAR(32)) RETURNS VARCHAR(33) DETERMINISTIC
BEGIN
  DECLARE total INT DEFAULT 0;
  DECLARE k INT DEFAULT 1;
  DECLARE d INT;
  DECLARE n INT DEFAULT CHAR_LENGTH(digits);
  WHILE k <= n DO
    SET d = CAST(SUBSTRING(digits, k, 1) AS UNSIGNED);
    IF (n - k) % 2 = 0 THEN
      SET d = d * 2;
      IF d > 9 THEN SET d = d - 9; END IF;
    END IF;
    SET total = total + d;
    SET k = k + 1;
  END WHILE;
  RETURN CONCAT(digits, (10 - total % 10) % 10);
END//
DELIMITER ;

-- Repeatable random values.
SET SESSION rand_seed1 = 42, rand_seed2 = 4242;

-- Drawn once per row into a table, so each value is one draw.
CREATE TEMPORARY TABLE people AS
SELECT seq AS n,
       ELT(1 + FLOOR(RAND() * 48),
           'James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda',
           'David', 'Elizabeth', 'William', 'Barbara', 'Richard', 'Susan', 'Joseph', 'Jessica',
           'Thomas', 'Sarah', 'Carlos', 'Karen', 'Daniel', 'Lisa', 'Matthew', 'Nancy',
           'Anthony', 'Sofia', 'Mark', 'Ashley', 'Wei', 'Priya', 'Ahmed', 'Fatima',
           'Kenji', 'Yuki', 'Olga', 'Ivan', 'Lucia', 'Mateo', 'Amara', 'Kwame',
           'Noah', 'Emma', 'Liam', 'Olivia', 'Hannah', 'Lukas', 'Chloe', 'Arjun') AS first_name,
       ELT(1 + FLOOR(RAND() * 46),
           'Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis',
           'Rodriguez', 'Martinez', 'Hernandez', 'Lopez', 'Gonzalez', 'Wilson', 'Anderson',
           'Thomas', 'Taylor', 'Moore', 'Jackson', 'Martin', 'Lee', 'Perez', 'Thompson',
           'White', 'Harris', 'Clark', 'Lewis', 'Walker', 'Young', 'Allen', 'O''Brien',
           'Nguyen', 'Chen', 'Patel', 'Kim', 'Singh', 'Tanaka', 'Müller', 'Novak',
           'Kowalski', 'Rossi', 'Dubois', 'Okafor', 'Mensah', 'Haddad', 'Ivanova') AS last_name,
       ELT(1 + FLOOR(RAND() * 5),
           'example.com', 'example.org', 'example.net', 'mail.example.com',
           'corp.example.com') AS domain,
       CONCAT(LPAD(101 + FLOOR(RAND() * 564), 3, '0'), '-',
              LPAD(1 + FLOOR(RAND() * 99), 2, '0'), '-',
              LPAD(1 + FLOOR(RAND() * 9999), 4, '0')) AS ssn,
       IF(RAND() < 0.6, '4', CONCAT('5', 1 + FLOOR(RAND() * 5))) AS card_prefix,
       RAND() AS card_draw
FROM seq_1_to_2500;

INSERT INTO customers (id, name, email, ssn, card_number, external_id)
SELECT n,
       CONCAT(first_name, ' ', last_name),
       CONCAT(CASE n % 3
                  WHEN 0 THEN CONCAT(LOWER(first_name), '.', REGEXP_REPLACE(LOWER(last_name), '[^a-z]', ''))
                  WHEN 1 THEN CONCAT(LOWER(LEFT(first_name, 1)), REGEXP_REPLACE(LOWER(last_name), '[^a-z]', ''))
                  ELSE CONCAT(LOWER(first_name), '_', REGEXP_REPLACE(LOWER(last_name), '[^a-z]', ''))
              END, n, '@', domain),
       ssn,
       airlock_seed_luhn(CONCAT(card_prefix,
                                LPAD(FLOOR(card_draw * POW(10, 15 - CHAR_LENGTH(card_prefix))),
                                     15 - CHAR_LENGTH(card_prefix), '0'))),
       UUID()
FROM people
ORDER BY n;

INSERT INTO orders (id, customer_id, amount, status, created_at)
SELECT seq,
       1 + FLOOR(RAND() * 2500),
       ROUND(4.99 + RAND() * RAND() * 995, 2),
       ELT(1 + FLOOR(RAND() * 10), 'pending', 'paid', 'paid', 'shipped', 'shipped', 'delivered',
           'delivered', 'delivered', 'refunded', 'cancelled'),
       NOW() - INTERVAL FLOOR(RAND() * 365 * 86400) SECOND
FROM seq_1_to_6000;

DROP TEMPORARY TABLE people;
DROP FUNCTION airlock_seed_luhn;
ANALYZE TABLE customers, orders;
