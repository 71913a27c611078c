// The driver matrix, pgjdbc: see crates/airlock/tests/drivers/mod.rs.
//
// Run as a single source file: java -cp /usr/share/java/postgresql.jar PgjdbcMatrix.java
//
// Runs every step through the gateway, records what the driver decoded (or
// the error it raised) and prints one JSON line the Rust test compares with
// what it expects. Exits 0 whatever happened: the Rust test decides.

import java.math.BigDecimal;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.postgresql.PGProperty;
import org.postgresql.util.PGobject;

public class PgjdbcMatrix {
    static final Map<String, String> ENV = System.getenv();
    static final String TABLE = ENV.get("MATRIX_TABLE");
    static final boolean READ_WRITE = ENV.get("MATRIX_MODE").equals("read-write");
    static final String TYPED_COLUMNS = "amount, at, tags, nums, payload, doc, docb";
    static final Map<String, Object> RESULT = new LinkedHashMap<>();

    // The typed values, passed as separate variables (this file parses no JSON).
    static final String AMOUNT = ENV.get("MATRIX_AMOUNT");
    static final long AT_MS = Long.parseLong(ENV.get("MATRIX_AT_MS"));
    static final String[] TAGS = ENV.get("MATRIX_TAGS").split("\n", -1);
    static final Integer[] NUMS = Arrays.stream(ENV.get("MATRIX_NUMS").split(","))
            .map(Integer::valueOf).toArray(Integer[]::new);
    static final String PAYLOAD = ENV.get("MATRIX_PAYLOAD");
    static final String DOC = ENV.get("MATRIX_DOC");

    /** JSON text to embed as it is. */
    record Raw(String json) {}

    interface Step {
        Object run() throws Exception;
    }

    interface Action {
        Object run() throws SQLException;
    }

    static Map<String, Object> error(Exception e) {
        Map<String, Object> inner = new LinkedHashMap<>();
        inner.put("sqlstate", e instanceof SQLException s ? s.getSQLState() : null);
        inner.put("message", String.valueOf(e));
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("error", inner);
        return out;
    }

    static void step(String name, Step s) {
        try {
            RESULT.put(name, s.run());
        } catch (Exception e) {
            RESULT.put(name, error(e));
        }
    }

    /** The SQLSTATE and message `a` fails with, or what it returned instead. */
    static Object expectError(Action a) {
        try {
            return Map.of("unexpected_success", String.valueOf(a.run()));
        } catch (SQLException e) {
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("sqlstate", e.getSQLState());
            out.put("message", String.valueOf(e.getMessage()));
            return out;
        }
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static byte[] unhex(String s) {
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    /** The typed columns starting at `first`, as the contract's values. */
    static Map<String, Object> canonical(ResultSet rs, int first) throws SQLException {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("amount", rs.getBigDecimal(first).toPlainString());
        out.put("at_ms", rs.getObject(first + 1, OffsetDateTime.class).toInstant().toEpochMilli());
        out.put("tags", Arrays.asList((Object[]) rs.getArray(first + 2).getArray()));
        out.put("nums", Arrays.asList((Object[]) rs.getArray(first + 3).getArray()));
        out.put("payload", hex(rs.getBytes(first + 4)));
        out.put("doc", new Raw(rs.getString(first + 5)));
        out.put("docb", new Raw(rs.getString(first + 6)));
        return out;
    }

    /** Binds the typed values to parameters `first`.. of `ps`. */
    static void bindTyped(Connection c, PreparedStatement ps, int first) throws SQLException {
        ps.setBigDecimal(first, new BigDecimal(AMOUNT));
        ps.setObject(first + 1, OffsetDateTime.ofInstant(Instant.ofEpochMilli(AT_MS), ZoneOffset.UTC));
        ps.setArray(first + 2, c.createArrayOf("text", TAGS));
        ps.setArray(first + 3, c.createArrayOf("int4", NUMS));
        ps.setBytes(first + 4, unhex(PAYLOAD));
        PGobject doc = new PGobject();
        doc.setType("json");
        doc.setValue(DOC);
        ps.setObject(first + 5, doc);
        PGobject docb = new PGobject();
        docb.setType("jsonb");
        docb.setValue(DOC);
        ps.setObject(first + 6, docb);
    }

    static long count(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("SELECT count(*) FROM " + TABLE + " WHERE id <= ?")) {
            ps.setInt(1, 100);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    static int updateName(Connection c, int id, String name) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("UPDATE " + TABLE + " SET name = ? WHERE id = ?")) {
            ps.setString(1, name);
            ps.setInt(2, id);
            return ps.executeUpdate();
        }
    }

    static void run() {
        String url = "jdbc:postgresql://" + ENV.get("MATRIX_HOST") + ":" + ENV.get("MATRIX_PORT") + "/"
                + ENV.get("MATRIX_DB");
        Properties props = new Properties();
        props.setProperty(PGProperty.USER.getName(), ENV.get("MATRIX_USER"));
        props.setProperty(PGProperty.PASSWORD.getName(), ENV.get("MATRIX_PASSWORD"));
        props.setProperty(PGProperty.SSL_MODE.getName(), "disable");
        props.setProperty(PGProperty.CONNECT_TIMEOUT.getName(), "10");
        props.setProperty(PGProperty.SOCKET_TIMEOUT.getName(), "60");
        Connection c;
        try {
            c = DriverManager.getConnection(url, props);
        } catch (SQLException e) {
            RESULT.put("connect", error(e));
            return;
        }
        RESULT.put("connect", "ok");
        try (c) {
            steps(c);
        } catch (SQLException e) {
            RESULT.put("close", error(e));
        }
    }

    static void steps(Connection c) {
        step("param_select", () -> {
            try (PreparedStatement ps = c.prepareStatement("SELECT id, name, email FROM " + TABLE + " WHERE id = ?")) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    Map<String, Object> out = new LinkedHashMap<>();
                    out.put("id", rs.getInt(1));
                    out.put("name", rs.getString(2));
                    out.put("email", rs.getString(3));
                    return out;
                }
            }
        });

        // One PreparedStatement executed 7 times: from the 5th execution
        // (prepareThreshold=5) pgjdbc uses a named server-side statement,
        // and binary results for the types it can read in binary.
        List<PreparedStatement> kept = new ArrayList<>();
        step("prepared_reuse", () -> {
            PreparedStatement ps = c.prepareStatement(
                    "SELECT name AS reuse_probe_name, email, amount FROM " + TABLE + " WHERE id = ?");
            kept.add(ps);
            if (ps.unwrap(org.postgresql.PGStatement.class).getPrepareThreshold() != 5) {
                throw new IllegalStateException("prepareThreshold is not 5");
            }
            List<Object> out = new ArrayList<>();
            for (int i = 1; i <= 7; i++) {
                ps.setInt(1, i);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out.add(List.of(rs.getString(1), rs.getString(2), rs.getBigDecimal(3).toPlainString()));
                }
            }
            return out;
        });
        step("server_prepared", () -> {
            try (Statement s = c.createStatement();
                    ResultSet rs = s.executeQuery("SELECT count(*) > 0 FROM pg_prepared_statements"
                            + " WHERE statement LIKE '%reuse' || '_probe_name%'")) {
                rs.next();
                return rs.getBoolean(1);
            }
        });
        for (PreparedStatement ps : kept) {
            try {
                ps.close();
            } catch (SQLException e) {
                RESULT.put("close_reused", error(e));
            }
        }

        step("read_only_tx", () -> {
            // readOnlyMode=transaction (the default): a read-only connection
            // begins its transactions with BEGIN READ ONLY.
            c.setAutoCommit(false);
            c.setReadOnly(true);
            try {
                Map<String, Object> out = new LinkedHashMap<>();
                try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW transaction_read_only")) {
                    rs.next();
                    out.put("transaction_read_only", rs.getString(1));
                }
                out.put("count", count(c));
                if (READ_WRITE) {
                    RESULT.put("ro_tx_write", expectError(() -> updateName(c, 1, "nope")));
                    c.rollback();
                } else {
                    c.commit();
                }
                return out;
            } catch (SQLException e) {
                c.rollback();
                throw e;
            } finally {
                c.setReadOnly(false);
                c.setAutoCommit(true);
            }
        });

        step("types_select", () -> {
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT " + TYPED_COLUMNS + " FROM " + TABLE + " WHERE id = ?")) {
                ps.setInt(1, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return canonical(rs, 1);
                }
            }
        });
        step("types_params", () -> {
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT ?::numeric, ?::timestamptz, ?::text[], ?::int[], ?::bytea, ?::json, ?::jsonb")) {
                bindTyped(c, ps, 1);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    return canonical(rs, 1);
                }
            }
        });

        if (READ_WRITE) {
            step("insert", () -> {
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE
                        + " (id, name, email, " + TYPED_COLUMNS + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                    ps.setInt(1, 100);
                    ps.setString(2, "zulu");
                    ps.setString(3, "zed@example.com");
                    bindTyped(c, ps, 4);
                    return ps.executeUpdate();
                }
            });
            step("inserted", () -> {
                try (PreparedStatement ps = c.prepareStatement(
                        "SELECT id, name, email, " + TYPED_COLUMNS + " FROM " + TABLE + " WHERE id = ?")) {
                    ps.setInt(1, 100);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        Map<String, Object> out = new LinkedHashMap<>();
                        out.put("id", rs.getInt(1));
                        out.put("name", rs.getString(2));
                        out.put("email", rs.getString(3));
                        out.put("values", canonical(rs, 4));
                        return out;
                    }
                }
            });
            step("update", () -> updateName(c, 2, "bravo-updated"));
            step("delete", () -> {
                try (PreparedStatement ps = c.prepareStatement("DELETE FROM " + TABLE + " WHERE id = ?")) {
                    ps.setInt(1, 3);
                    return ps.executeUpdate();
                }
            });
        } else {
            step("write_refused", () -> expectError(() -> updateName(c, 1, "nope")));
            step("after_refusal", () -> count(c));
        }
    }

    // A minimal JSON writer for what RESULT holds.
    static void json(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Raw r) {
            sb.append(r.json());
        } else if (v instanceof String s) {
            sb.append('"');
            for (char ch : s.toCharArray()) {
                switch (ch) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (ch < 0x20) sb.append(String.format("\\u%04x", (int) ch));
                        else sb.append(ch);
                    }
                }
            }
            sb.append('"');
        } else if (v instanceof Number || v instanceof Boolean) {
            sb.append(v);
        } else if (v instanceof Map<?, ?> m) {
            sb.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) sb.append(',');
                first = false;
                json(sb, String.valueOf(e.getKey()));
                sb.append(':');
                json(sb, e.getValue());
            }
            sb.append('}');
        } else if (v instanceof List<?> l) {
            sb.append('[');
            for (int i = 0; i < l.size(); i++) {
                if (i > 0) sb.append(',');
                json(sb, l.get(i));
            }
            sb.append(']');
        } else {
            json(sb, String.valueOf(v));
        }
    }

    public static void main(String[] args) {
        RESULT.put("driver", "pgjdbc");
        run();
        StringBuilder sb = new StringBuilder();
        json(sb, RESULT);
        // ASCII only, whatever the platform encoding: outside strings JSON
        // has no other characters, so escaping every one is still JSON.
        StringBuilder ascii = new StringBuilder();
        sb.chars().forEach(ch -> {
            if (ch < 0x80) ascii.append((char) ch);
            else ascii.append(String.format("\\u%04x", ch));
        });
        System.out.println(ascii);
    }
}
