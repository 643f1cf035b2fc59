// The npm clients, used as their READMEs show; prints each one's observations as JSON.
//
//   node drive_npm.mjs NODE_MODULES_DIR PORT USER PASSWORD TOKEN
//
// @lakehouse-rs/flight-sql-client wraps Rust's arrow-flight FlightSqlServiceClient (napi-rs);
// @gizmodata/gizmosql-client is TypeScript over @grpc/grpc-js. Same shape as observe.py.
import { createRequire } from 'node:module';
import path from 'node:path';

const [home, portText, user, password, token] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(home), 'package.json'));
const { createFlightSqlClient } = require('@lakehouse-rs/flight-sql-client');
const { FlightSQLClient } = require('@gizmodata/gizmosql-client');
const { tableFromIPC } = require('apache-arrow');
const port = Number(portText);
const WRONG_PASSWORD = 'not-the-password'; // observe.py's

const plain = (value) =>
  JSON.parse(JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? Number(v) : v)));
const rows = (table) => table.toArray().map((row) => Object.values(row.toJSON()));

async function observe(operations) {
  const seen = {};
  for (const [name, operation] of Object.entries(operations)) {
    try {
      seen[name] = { value: plain(await operation()) };
    } catch (error) {
      seen[name] = { error: String(error) };
    }
  }
  return seen;
}

function within(ms, promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function items(table) {
  return {
    columns: table.schema.fields.map((f) => f.name),
    ids: [...table.getChild('id')].map(Number),
    names: [...table.getChild('name')],
  };
}

const types = (table) => table.schema.fields.map((f) => String(f.type));

async function lakehouse() {
  const base = { tls: false, host: '127.0.0.1', port, headers: [] };
  const client = await createFlightSqlClient({ ...base, username: user, password });
  const bearer = await createFlightSqlClient({ ...base, token });
  const table = async (buffer) => tableFromIPC(await buffer);
  return observe({
    connect: async () => rows(await table(client.query('select 1 as x'))),
    bearer: async () => rows(await table(bearer.query('select 1 as x'))),
    // Bounded: on a refused handshake the client's Rust worker panics and its promise
    // never settles.
    refused: async () =>
      within(10000, createFlightSqlClient({ ...base, username: user, password: WRONG_PASSWORD })),
    query: async () => items(await table(client.query('select * from shop.items order by id'))),
    types: async () => types(await table(client.query('select * from shop.items'))),
    large: async () =>
      (await table(client.query('select value from generate_series(1, 300000)'))).numRows,
    catalogs: async () => (await table(client.getCatalogs())).getChild('catalog_name').toArray(),
    schemas: async () =>
      [...(await table(client.getDbSchemas({}))).getChild('db_schema_name')].sort(),
    tables: async () =>
      [...(await table(client.getTables({ tableTypes: ['TABLE'] }))).getChild('table_name')],
    views: async () =>
      [...(await table(client.getTables({ tableTypes: ['VIEW'] }))).getChild('table_name')],
    include_schema: async () => {
      const found = await table(client.getTables({ includeSchema: true, tableNameFilterPattern: 'items' }));
      return found.getChild('table_schema') === null ? null : found.numRows;
    },
    error: async () => rows(await table(client.query('select nope from shop.items'))),
  });
}

async function gizmosql() {
  const base = { host: '127.0.0.1', port, plaintext: true };
  const client = new FlightSQLClient({ ...base, username: user, password });
  const bearer = new FlightSQLClient({ ...base, token });
  try {
    return await observe({
      connect: async () => rows(await client.execute('select 1 as x')),
      bearer: async () => rows(await bearer.execute('select 1 as x')),
      refused: async () => {
        const wrong = new FlightSQLClient({ ...base, username: user, password: WRONG_PASSWORD });
        try {
          return rows(await wrong.execute('select 1 as x'));
        } finally {
          await wrong.close();
        }
      },
      query: async () => items(await client.execute('select * from shop.items order by id')),
      types: async () => types(await client.execute('select * from shop.items')),
      large: async () =>
        (await client.execute('select value from generate_series(1, 300000)')).numRows,
      catalogs: async () => client.getCatalogs(),
      schemas: async () => (await client.getSchemas('flightsql')).map((s) => s.schema).sort(),
      tables: async () =>
        (await client.getTables('flightsql', 'shop', undefined, ['TABLE'])).map((t) => t.tableName),
      views: async () =>
        (await client.getTables('flightsql', 'shop', undefined, ['VIEW'])).map((t) => t.tableName),
      table_types: async () => client.getTableTypes(),
      sql_info: async () => Object.fromEntries(await client.getSqlInfo([0])),
      columns: async () =>
        (await client.getQuerySchema('select * from shop.items')).fields.map((f) => f.name),
      prepared: async () => {
        const statement = await client.prepare('select name from shop.items where id = 1');
        try {
          return await client.executePrepared(statement);
        } finally {
          await client.closePrepared(statement);
        }
      },
      primary_keys: async () => client.getPrimaryKeys('flightsql', 'shop', 'items'),
      error: async () => rows(await client.execute('select nope from shop.items')),
    });
  } finally {
    await client.close();
    await bearer.close();
  }
}

const out = { lakehouse: await lakehouse(), gizmosql: await gizmosql() };
process.stdout.write(JSON.stringify(out));
process.exit(0);
