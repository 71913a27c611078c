// MariaDB Connector/J through airlock's MySQL door
// (crates/airlock/tests/e2e/mysql.rs): the token as the password over TLS
// (Connector/J sends a cleartext password only over TLS), a text query, a
// server-side prepared statement (useServerPrepStmts: binary rows), a
// refused write. Prints one line per check, `key=value`.
import java.sql.*;
import java.util.Properties;

public class ConnectorJ {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://" + System.getenv("HOST") + ":" + System.getenv("PORT")
                + "/shop?useSsl=true&trustServerCertificate=true&useServerPrepStmts=true";
        Properties p = new Properties();
        p.setProperty("user", "readonly");
        p.setProperty("password", System.getenv("TOKEN"));
        try (Connection c = DriverManager.getConnection(url, p)) {
            try (Statement s = c.createStatement();
                 ResultSet r = s.executeQuery("select name, ssn, email from customers order by id")) {
                r.next();
                System.out.println("text=" + r.getString(1) + "|" + r.getString(2) + "|" + r.getString(3));
            }
            try (PreparedStatement s = c.prepareStatement("select name, ssn from customers where id = ?")) {
                s.setInt(1, 2);
                try (ResultSet r = s.executeQuery()) {
                    r.next();
                    System.out.println("prepared=" + r.getString(1) + "|" + r.getString(2));
                }
            }
            try (Statement s = c.createStatement()) {
                s.executeUpdate("delete from customers where id = 1");
                System.out.println("write=ran");
            } catch (SQLException e) {
                System.out.println("write=" + e.getErrorCode());
            }
        }
    }
}
