// node mysql2 through airlock's MySQL door (crates/airlock/tests/e2e/mysql.rs):
// the token as the password, cleartext opted into, a text query, a prepared
// statement (binary rows), a refused write. Prints JSON.
const mysql = require("mysql2/promise");

async function main() {
  const c = await mysql.createConnection({
    host: process.env.HOST,
    port: Number(process.env.PORT),
    user: "readonly",
    database: "shop",
    password: process.env.TOKEN,
    enableCleartextPlugin: true,
  });
  const [text] = await c.query("select name, ssn, email from customers order by id");
  const [prepared] = await c.execute("select name, ssn from customers where id = ?", [2]);
  let err = null;
  try {
    await c.query("delete from customers where id = 1");
  } catch (e) {
    err = e.errno;
  }
  await c.end();
  console.log(JSON.stringify({ text, prepared, err }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
