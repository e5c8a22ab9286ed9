/* The SQLite backend of the store: schema, migrations, pragmas and one or
 * two SQL statements per op of struct lg_store_ops. Everything specific to
 * SQLite lives here; the SQL itself stays close to what PostgreSQL accepts
 * (RETURNING, ON CONFLICT, no SQLite-only functions in the queries), so that
 * a PostgreSQL backend is mostly a copy of these strings.
 *
 * Durability: WAL with synchronous=FULL by default. In WAL mode NORMAL is
 * already safe against a kill -9 of legiond (a commit is in the WAL in the
 * page cache before it returns), but not against a host crash or power cut,
 * which could lose the last commits. The writes here are API calls (an app
 * created, a token whose secret was printed once), few per second, so one
 * fsync of the WAL per commit is cheap and makes "acknowledged" mean
 * "on disk". LG_STORE_SYNC_NORMAL is there for benchmarks and scratch stores.
 *
 * Every statement is prepared once (lazily) and kept; values are always
 * bound parameters, never spliced into SQL. */
#include "store/store-internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

/* ---- schema ------------------------------------------------------------- */

struct migration {
        int version;
        const char *sql;
};

/* Append only: a shipped migration is never edited, a change of schema is a
 * new entry. Each runs inside the transaction that also bumps
 * schema_version, so a crash leaves the database at one version or the next. */
static const struct migration migrations[] = {
        {1,
         "CREATE TABLE legion_meta (\n"
         "  key TEXT PRIMARY KEY,\n"
         "  value INTEGER NOT NULL);\n"
         "INSERT INTO legion_meta (key, value) VALUES\n"
         "  ('resource_version', 0), ('events_floor', 0);\n"
         "CREATE TABLE resources (\n"
         "  kind TEXT NOT NULL,\n"
         "  namespace TEXT NOT NULL,\n"
         "  name TEXT NOT NULL,\n"
         "  uid TEXT NOT NULL UNIQUE,\n"
         "  resource_version INTEGER NOT NULL,\n"
         "  generation INTEGER NOT NULL,\n"
         "  labels TEXT NOT NULL,\n"
         "  spec TEXT NOT NULL,\n"
         "  status TEXT NOT NULL,\n"
         "  created_at INTEGER NOT NULL,\n"
         "  updated_at INTEGER NOT NULL,\n"
         "  PRIMARY KEY (kind, namespace, name));\n"
         "CREATE TABLE events (\n"
         "  resource_version INTEGER PRIMARY KEY,\n"
         "  type TEXT NOT NULL,\n"
         "  kind TEXT NOT NULL,\n"
         "  namespace TEXT NOT NULL,\n"
         "  name TEXT NOT NULL,\n"
         "  object TEXT NOT NULL);\n"
         "CREATE INDEX events_by_kind ON events (kind, namespace, resource_version);\n"},
        {2,
         "CREATE TABLE revisions (\n"
         "  kind TEXT NOT NULL,\n"
         "  namespace TEXT NOT NULL,\n"
         "  name TEXT NOT NULL,\n"
         "  revision INTEGER NOT NULL,\n"
         "  created_at INTEGER NOT NULL,\n"
         "  spec TEXT NOT NULL,\n"
         "  PRIMARY KEY (kind, namespace, name, revision),\n"
         "  FOREIGN KEY (kind, namespace, name)\n"
         "    REFERENCES resources (kind, namespace, name) ON DELETE CASCADE);\n"},
        {3,
         "CREATE TABLE tokens (\n"
         "  id TEXT PRIMARY KEY,\n"
         "  hash TEXT NOT NULL UNIQUE,\n"
         "  namespace TEXT NOT NULL,\n"
         "  description TEXT NOT NULL,\n"
         "  created_at INTEGER NOT NULL,\n"
         "  expires_at INTEGER NOT NULL);\n"
         "CREATE INDEX tokens_by_namespace ON tokens (namespace);\n"
         "CREATE TABLE blobs (\n"
         "  digest TEXT PRIMARY KEY,\n"
         "  size INTEGER NOT NULL,\n"
         "  media_type TEXT NOT NULL,\n"
         "  created_at INTEGER NOT NULL);\n"
         "CREATE TABLE blob_refs (\n"
         "  digest TEXT NOT NULL REFERENCES blobs (digest) ON DELETE RESTRICT,\n"
         "  kind TEXT NOT NULL,\n"
         "  namespace TEXT NOT NULL,\n"
         "  name TEXT NOT NULL,\n"
         "  PRIMARY KEY (digest, kind, namespace, name),\n"
         "  FOREIGN KEY (kind, namespace, name)\n"
         "    REFERENCES resources (kind, namespace, name) ON DELETE CASCADE);\n"
         "CREATE INDEX blob_refs_by_resource ON blob_refs (kind, namespace, name);\n"},
        /* App keys (docs/security.md): a token row scoped to one app of its
         * namespace; '' for the tokens of the API. */
        {4,
         "ALTER TABLE tokens ADD COLUMN app TEXT NOT NULL DEFAULT '';\n"
         "CREATE INDEX tokens_by_app ON tokens (namespace, app);\n"},
};

const int lg_store_sqlite_schema_version = 4;

/* ---- statements --------------------------------------------------------- */

enum stmt_id {
        S_BEGIN,
        S_BEGIN_IMMEDIATE,
        S_COMMIT,
        S_ROLLBACK,
        S_SAVEPOINT,
        S_RELEASE,
        S_ROLLBACK_TO,
        S_NEXT_RV,
        S_CURRENT_RV,
        S_RES_GET,
        S_RES_LIST,
        S_RES_LIST_NS,
        S_RES_INSERT,
        S_RES_UPDATE,
        S_RES_DELETE,
        S_EV_APPEND,
        S_EV_TRIM,
        S_EV_RAISE_FLOOR,
        S_EV_FLOOR,
        S_EV_LIST,
        S_EV_LIST_KIND,
        S_EV_LIST_NS,
        S_EV_LIST_KIND_NS,
        S_REV_LATEST,
        S_REV_GET,
        S_REV_INSERT,
        S_REV_LIST,
        S_REV_PRUNE,
        S_TOK_INSERT,
        S_TOK_FIND,
        S_TOK_LIST,
        S_TOK_LIST_NS,
        S_TOK_DELETE,
        S_BLOB_INSERT,
        S_BLOB_GET,
        S_BLOB_LIST,
        S_BLOB_DELETE,
        S_REF_INSERT,
        S_REF_DELETE,
        S_REF_LIST,
        N_STMTS
};

#define RES_COLS                                                                          \
        "kind, namespace, name, uid, resource_version, generation, labels, spec, status, " \
        "created_at, updated_at"
#define KEY_IS "kind = ?1 AND namespace = ?2 AND name = ?3"
#define EV_COLS "SELECT resource_version, type, object FROM events WHERE resource_version > ?1 "
#define EV_END " ORDER BY resource_version LIMIT ?4"
#define TOK_COLS "SELECT id, namespace, description, created_at, expires_at, app FROM tokens "
#define BLOB_COLS                                                                 \
        "SELECT b.digest, b.size, b.media_type, b.created_at, "                  \
        "(SELECT count(*) FROM blob_refs r WHERE r.digest = b.digest) FROM blobs b "

static const char *const stmt_sql[N_STMTS] = {
        [S_BEGIN] = "BEGIN",
        [S_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
        [S_COMMIT] = "COMMIT",
        [S_ROLLBACK] = "ROLLBACK",
        [S_SAVEPOINT] = "SAVEPOINT lg_call",
        [S_RELEASE] = "RELEASE lg_call",
        [S_ROLLBACK_TO] = "ROLLBACK TO lg_call",
        [S_NEXT_RV] = "UPDATE legion_meta SET value = value + 1 WHERE key = 'resource_version' "
                      "RETURNING value",
        [S_CURRENT_RV] = "SELECT value FROM legion_meta WHERE key = 'resource_version'",
        [S_RES_GET] = "SELECT " RES_COLS " FROM resources WHERE " KEY_IS,
        [S_RES_LIST] = "SELECT " RES_COLS " FROM resources WHERE kind = ?1 "
                       "ORDER BY namespace, name",
        [S_RES_LIST_NS] = "SELECT " RES_COLS " FROM resources WHERE kind = ?1 AND namespace = ?2 "
                          "ORDER BY name",
        [S_RES_INSERT] = "INSERT INTO resources (" RES_COLS ") "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        [S_RES_UPDATE] = "UPDATE resources SET resource_version = ?5, generation = ?6, "
                         "labels = ?7, spec = ?8, status = ?9, updated_at = ?11 WHERE " KEY_IS,
        [S_RES_DELETE] = "DELETE FROM resources WHERE " KEY_IS,
        [S_EV_APPEND] = "INSERT INTO events (resource_version, type, kind, namespace, name, object) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [S_EV_TRIM] = "DELETE FROM events WHERE resource_version <= ?1",
        [S_EV_RAISE_FLOOR] = "UPDATE legion_meta SET value = ?1 "
                             "WHERE key = 'events_floor' AND value < ?1",
        [S_EV_FLOOR] = "SELECT value FROM legion_meta WHERE key = 'events_floor'",
        [S_EV_LIST] = EV_COLS EV_END,
        [S_EV_LIST_KIND] = EV_COLS "AND kind = ?2" EV_END,
        [S_EV_LIST_NS] = EV_COLS "AND namespace = ?3" EV_END,
        [S_EV_LIST_KIND_NS] = EV_COLS "AND kind = ?2 AND namespace = ?3" EV_END,
        [S_REV_LATEST] = "SELECT revision, created_at, spec FROM revisions WHERE " KEY_IS
                         " ORDER BY revision DESC LIMIT 1",
        [S_REV_GET] = "SELECT revision, created_at, spec FROM revisions WHERE " KEY_IS
                      " AND revision = ?4",
        [S_REV_INSERT] = "INSERT INTO revisions (kind, namespace, name, revision, created_at, spec) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [S_REV_LIST] = "SELECT revision, created_at, spec FROM revisions WHERE " KEY_IS
                       " ORDER BY revision",
        [S_REV_PRUNE] = "DELETE FROM revisions WHERE " KEY_IS " AND revision < ?4",
        [S_TOK_INSERT] = "INSERT INTO tokens (id, hash, namespace, description, created_at, "
                         "expires_at, app) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [S_TOK_FIND] = TOK_COLS "WHERE hash = ?1",
        [S_TOK_LIST] = TOK_COLS "WHERE app = '' ORDER BY created_at, id",
        [S_TOK_LIST_NS] = TOK_COLS "WHERE namespace = ?1 AND app = ?2 ORDER BY created_at, id",
        [S_TOK_DELETE] = "DELETE FROM tokens WHERE id = ?1",
        [S_BLOB_INSERT] = "INSERT INTO blobs (digest, size, media_type, created_at) "
                          "VALUES (?1, ?2, ?3, ?4)",
        [S_BLOB_GET] = BLOB_COLS "WHERE b.digest = ?1",
        [S_BLOB_LIST] = BLOB_COLS
        "WHERE (?1 = 0 OR NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.digest = b.digest)) "
        "AND (?2 = 0 OR b.created_at < ?2) ORDER BY b.digest",
        [S_BLOB_DELETE] = "DELETE FROM blobs WHERE digest = ?1",
        [S_REF_INSERT] = "INSERT INTO blob_refs (digest, kind, namespace, name) "
                         "VALUES (?4, ?1, ?2, ?3) ON CONFLICT DO NOTHING",
        [S_REF_DELETE] = "DELETE FROM blob_refs WHERE " KEY_IS " AND digest = ?4",
        [S_REF_LIST] = "SELECT kind, namespace, name FROM blob_refs WHERE digest = ?1 "
                       "ORDER BY kind, namespace, name",
};

struct sqlite_store {
        struct lg_store head;
        sqlite3 *db;
        sqlite3_stmt *stmts[N_STMTS];
};

static struct sqlite_store *SS(lg_store *st) { return (struct sqlite_store *) st; }

/* ---- errors, statements, binding ----------------------------------------- */

static int errno_of(sqlite3 *db, int rc) {
        int sys;
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return EBUSY;
        case SQLITE_CONSTRAINT:
                return rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE ? EEXIST
                                                                                            : EINVAL;
        case SQLITE_NOMEM:
                return ENOMEM;
        case SQLITE_FULL:
                return ENOSPC;
        case SQLITE_READONLY:
                return EROFS;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return EACCES;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return EUCLEAN;
        case SQLITE_TOOBIG:
                return E2BIG;
        case SQLITE_CANTOPEN:
        case SQLITE_IOERR:
                sys = db ? sqlite3_system_errno(db) : 0;
                return sys > 0 ? sys : EIO;
        default:
                return EIO;
        }
}

/* -EEXIST goes up without a message: the generic layer names the object. */
static int fail(struct sqlite_store *ss, int rc, struct lg_error *err, const char *what) {
        int e = errno_of(ss->db, rc);
        if (e == EEXIST)
                return -EEXIST;
        return lg_error_set(err, e, "%s: %s", what, sqlite3_errmsg(ss->db));
}

/* One use of a statement: prepared, bound, stepped, and reset (a cached
 * one) or finalized (a one-off) by its cleanup. The first error of
 * preparing or binding sticks and is reported by the step, so that an op is
 * query(), its binds and one step call. Strings are bound SQLITE_STATIC:
 * they outlive the statement's use (the cleanup resets it before any
 * caller's buffer goes away). */
struct query {
        struct sqlite_store *ss;
        sqlite3_stmt *s;
        int rc;           /* SQLITE_OK, or the first error of prepare or bind */
        const char *what; /* names the op in an error message */
        bool one_off;     /* s is not in the cache: finalize it */
};

/* A statement of the cache, prepared on first use and kept. */
static struct query query(struct sqlite_store *ss, enum stmt_id id, const char *what) {
        struct query q = {ss, ss->stmts[id], SQLITE_OK, what, false};
        if (!q.s) {
                q.rc = sqlite3_prepare_v3(ss->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
                                          &ss->stmts[id], NULL);
                q.s = ss->stmts[id];
                if (q.rc != SQLITE_OK)
                        q.what = "prepare statement";
        }
        return q;
}

/* A statement run once (schema, pragmas, checks), outside the cache. */
static struct query query_sql(struct sqlite_store *ss, const char *sql, const char *what) {
        struct query q = {ss, NULL, SQLITE_OK, what, true};
        q.rc = sqlite3_prepare_v2(ss->db, sql, -1, &q.s, NULL);
        return q;
}

static void query_done(struct query *q) {
        if (q->one_off)
                sqlite3_finalize(q->s);
        else if (q->s) {
                sqlite3_reset(q->s);
                sqlite3_clear_bindings(q->s);
        }
}
#define _cleanup_query_ _cleanup_(query_done)

static void bind_text(struct query *q, int i, const char *v) {
        if (q->rc == SQLITE_OK)
                q->rc = sqlite3_bind_text(q->s, i, v, -1, SQLITE_STATIC);
}
static void bind_int(struct query *q, int i, int64_t v) {
        if (q->rc == SQLITE_OK)
                q->rc = sqlite3_bind_int64(q->s, i, v);
}
static void bind_key(struct query *q, const struct lg_resource_key *k) {
        bind_text(q, 1, k->kind);
        bind_text(q, 2, k->namespace);
        bind_text(q, 3, k->name);
}

/* Step to the next row: 1 with a row, 0 at the end. */
static int query_step(struct query *q, struct lg_error *err) {
        int rc = q->rc == SQLITE_OK ? sqlite3_step(q->s) : q->rc;
        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return fail(q->ss, rc, err, q->what);
}

/* Step a statement that returns no rows (or whose first row is ignored). */
static int query_run(struct query *q, struct lg_error *err) {
        int r = query_step(q, err);
        return r < 0 ? r : 0;
}

/* The same for a write: how many rows it changed. */
static int query_write(struct query *q, struct lg_error *err) {
        int r = query_step(q, err);
        return r < 0 ? r : sqlite3_changes(q->ss->db);
}

/* A count of rows read or changed, for an op about one row: 0, or -ENOENT
 * (without a message) for none. */
static int found(int r) { return r < 0 ? r : r > 0 ? 0 : -ENOENT; }

/* Step to the single row of a query: 0 with the row, -ENOENT without. */
static int query_row(struct query *q, struct lg_error *err) { return found(query_step(q, err)); }

static int run_id(struct sqlite_store *ss, enum stmt_id id, struct lg_error *err,
                  const char *what) {
        _cleanup_query_ struct query q = query(ss, id, what);
        return query_run(&q, err);
}

static const char *col_text(sqlite3_stmt *s, int i) {
        return (const char *) sqlite3_column_text(s, i);
}

static int corrupt(struct lg_error *err, const char *table) {
        return lg_error_set(err, EUCLEAN, "malformed row in table %s", table);
}

/* ---- transactions -------------------------------------------------------- */

static int sq_begin(lg_store *st, bool write, struct lg_error *err) {
        return run_id(SS(st), write ? S_BEGIN_IMMEDIATE : S_BEGIN, err, "begin transaction");
}

static int sq_commit(lg_store *st, struct lg_error *err) {
        return run_id(SS(st), S_COMMIT, err, "commit");
}

static void sq_rollback(lg_store *st) {
        if (!sqlite3_get_autocommit(SS(st)->db))
                (void) run_id(SS(st), S_ROLLBACK, NULL, "rollback");
}

static int sq_savepoint(lg_store *st, struct lg_error *err) {
        /* SQLite rolls a whole transaction back by itself after some errors
         * (disk full, I/O). A savepoint now would open a fresh transaction
         * and the caller's later calls would commit one by one: refuse. */
        if (sqlite3_get_autocommit(SS(st)->db))
                return lg_error_set(err, EIO, "the open transaction was rolled back after an error");
        return run_id(SS(st), S_SAVEPOINT, err, "savepoint");
}

static int sq_release(lg_store *st, struct lg_error *err) {
        return run_id(SS(st), S_RELEASE, err, "release savepoint");
}

static void sq_rollback_to(lg_store *st) {
        if (sqlite3_get_autocommit(SS(st)->db))
                return;
        (void) run_id(SS(st), S_ROLLBACK_TO, NULL, "rollback to savepoint");
        (void) run_id(SS(st), S_RELEASE, NULL, "release savepoint");
}

/* A query of one integer, run outside the statement cache (rare queries). */
static int query_int(struct sqlite_store *ss, const char *sql, int64_t *ret,
                     struct lg_error *err) {
        _cleanup_query_ struct query q = query_sql(ss, sql, "query");
        int r = query_row(&q, err);
        if (r >= 0)
                *ret = sqlite3_column_int64(q.s, 0);
        return r;
}

/* The text of the first row of a one-off query, copied to buf; "" when
 * there is none. */
static int query_text(struct sqlite_store *ss, const char *sql, char *buf, size_t size,
                      struct lg_error *err, const char *what) {
        _cleanup_query_ struct query q = query_sql(ss, sql, what);
        int r = query_step(&q, err);
        if (r < 0)
                return r;
        snprintf(buf, size, "%s", r > 0 && col_text(q.s, 0) ? col_text(q.s, 0) : "");
        return 0;
}

static int sq_check(lg_store *st, struct lg_error *err) {
        struct sqlite_store *ss = SS(st);
        char res[201];
        int r = query_text(ss, "PRAGMA integrity_check", res, sizeof(res), err, "integrity check");
        if (r < 0)
                return r;
        if (strcmp(res, "ok") != 0)
                return lg_error_set(err, EUCLEAN, "integrity check: %s", res);

        int64_t n = 0;
        r = query_int(ss, "SELECT count(*) FROM pragma_foreign_key_check", &n, err);
        if (r < 0)
                return r;
        if (n > 0)
                return lg_error_set(err, EUCLEAN, "%" PRId64 " rows violate foreign keys", n);
        r = query_int(ss,
                      "SELECT (SELECT count(*) FROM resources WHERE resource_version > m.value) + "
                      "(SELECT count(*) FROM events WHERE resource_version > m.value) "
                      "FROM legion_meta m WHERE m.key = 'resource_version'",
                      &n, err);
        if (r < 0)
                return r == -ENOENT ? lg_error_set(err, EUCLEAN, "no resource version counter") : r;
        if (n > 0)
                return lg_error_set(err, EUCLEAN,
                                    "%" PRId64 " rows are ahead of the resource version counter", n);
        return 0;
}

/* ---- resource versions ---------------------------------------------------- */

static int read_int(lg_store *st, enum stmt_id id, int64_t *ret, struct lg_error *err,
                    const char *what) {
        _cleanup_query_ struct query q = query(SS(st), id, what);
        int r = query_row(&q, err);
        if (r == -ENOENT)
                return lg_error_set(err, EUCLEAN, "%s: row missing", what);
        if (r < 0)
                return r;
        *ret = sqlite3_column_int64(q.s, 0);
        return 0;
}

static int sq_next_rv(lg_store *st, int64_t *ret, struct lg_error *err) {
        return read_int(st, S_NEXT_RV, ret, err, "bump resource version");
}

static int sq_current_rv(lg_store *st, int64_t *ret, struct lg_error *err) {
        return read_int(st, S_CURRENT_RV, ret, err, "read resource version");
}

/* ---- resources ------------------------------------------------------------ */

static int load_doc(json_t **slot, const char *text, struct lg_error *err) {
        json_t *v;
        int r = lg_store_load_doc(text, &v, err);
        if (r < 0)
                return r;
        json_decref(*slot);
        *slot = v;
        return 0;
}

static int read_resource(sqlite3_stmt *s, struct lg_resource **ret, struct lg_error *err) {
        _cleanup_resource_ struct lg_resource *r = lg_resource_new();
        if (!r)
                return lg_error_set(err, ENOMEM, "read resource");
        int k;
        if (lg_store_copy_field(r->kind, sizeof(r->kind), col_text(s, 0)) < 0 ||
            lg_store_copy_field(r->namespace, sizeof(r->namespace), col_text(s, 1)) < 0 ||
            lg_store_copy_field(r->name, sizeof(r->name), col_text(s, 2)) < 0 ||
            lg_store_copy_field(r->uid, sizeof(r->uid), col_text(s, 3)) < 0)
                return corrupt(err, "resources");
        r->resource_version = sqlite3_column_int64(s, 4);
        r->generation = sqlite3_column_int64(s, 5);
        if ((k = load_doc(&r->labels, col_text(s, 6), err)) < 0 ||
            (k = load_doc(&r->spec, col_text(s, 7), err)) < 0 ||
            (k = load_doc(&r->status, col_text(s, 8), err)) < 0)
                return k;
        r->created_at = sqlite3_column_int64(s, 9);
        r->updated_at = sqlite3_column_int64(s, 10);
        *ret = TAKE_PTR(r);
        return 0;
}

static int sq_res_get(lg_store *st, const struct lg_resource_key *key, struct lg_resource **ret,
                      struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_RES_GET, "read resource");
        bind_key(&q, key);
        int r = query_row(&q, err);
        return r < 0 ? r : read_resource(q.s, ret, err);
}

static int sq_res_list(lg_store *st, const char *kind, const char *namespace,
                       lg_store_resource_fn fn, void *userdata, struct lg_error *err) {
        _cleanup_query_ struct query q =
                query(SS(st), namespace ? S_RES_LIST_NS : S_RES_LIST, "list resources");
        bind_text(&q, 1, kind);
        if (namespace)
                bind_text(&q, 2, namespace);
        int r;
        while ((r = query_step(&q, err)) > 0) {
                struct lg_resource *res;
                if ((r = read_resource(q.s, &res, err)) < 0 || (r = fn(res, userdata)) < 0)
                        return r;
        }
        return r;
}

static void bind_row(struct query *q, const struct lg_store_row *row) {
        const struct lg_resource *r = row->r;
        bind_key(q, &(struct lg_resource_key){r->kind, r->namespace, r->name});
        bind_text(q, 4, r->uid);
        bind_int(q, 5, r->resource_version);
        bind_int(q, 6, r->generation);
        bind_text(q, 7, row->labels);
        bind_text(q, 8, row->spec);
        bind_text(q, 9, row->status);
        bind_int(q, 10, r->created_at);
        bind_int(q, 11, r->updated_at);
}

static int sq_res_insert(lg_store *st, const struct lg_store_row *row, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_RES_INSERT, "insert resource");
        bind_row(&q, row);
        return query_run(&q, err);
}

static int sq_res_update(lg_store *st, const struct lg_store_row *row, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_RES_UPDATE, "update resource");
        bind_row(&q, row); /* ?4 (uid) and ?10 (created_at) are bound but unused */
        return found(query_write(&q, err));
}

static int sq_res_delete(lg_store *st, const struct lg_resource_key *key, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_RES_DELETE, "delete resource");
        bind_key(&q, key);
        return found(query_write(&q, err));
}

/* ---- events --------------------------------------------------------------- */

static int sq_event_append(lg_store *st, int64_t rv, enum lg_event_type type,
                           const struct lg_resource *res, const char *object_json,
                           struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_EV_APPEND, "append event");
        bind_int(&q, 1, rv);
        bind_text(&q, 2, lg_event_type_name(type));
        bind_text(&q, 3, res->kind);
        bind_text(&q, 4, res->namespace);
        bind_text(&q, 5, res->name);
        bind_text(&q, 6, object_json);
        int r = query_run(&q, err);
        return r == -EEXIST ? lg_error_set(err, EUCLEAN, "event %" PRId64 " exists twice", rv) : r;
}

/* A statement whose one parameter is an integer. */
static int run_int(struct sqlite_store *ss, enum stmt_id id, int64_t v, struct lg_error *err,
                   const char *what) {
        _cleanup_query_ struct query q = query(ss, id, what);
        bind_int(&q, 1, v);
        return query_run(&q, err);
}

static int sq_event_trim(lg_store *st, int64_t upto, struct lg_error *err) {
        int r = run_int(SS(st), S_EV_TRIM, upto, err, "trim events");
        return r < 0 ? r : run_int(SS(st), S_EV_RAISE_FLOOR, upto, err, "record event floor");
}

static int sq_event_floor(lg_store *st, int64_t *ret, struct lg_error *err) {
        return read_int(st, S_EV_FLOOR, ret, err, "read event floor");
}

static int parse_event_type(const char *s, enum lg_event_type *ret) {
        for (enum lg_event_type t = LG_EVENT_ADDED; t <= LG_EVENT_DELETED; t++)
                if (s && strcmp(s, lg_event_type_name(t)) == 0) {
                        *ret = t;
                        return 0;
                }
        return -EUCLEAN;
}

static int sq_event_list(lg_store *st, int64_t after, const char *kind, const char *namespace,
                         size_t limit, lg_store_event_fn fn, void *userdata,
                         struct lg_error *err) {
        enum stmt_id id = kind ? (namespace ? S_EV_LIST_KIND_NS : S_EV_LIST_KIND)
                               : (namespace ? S_EV_LIST_NS : S_EV_LIST);
        _cleanup_query_ struct query q = query(SS(st), id, "list events");
        bind_int(&q, 1, after);
        if (kind)
                bind_text(&q, 2, kind);
        if (namespace)
                bind_text(&q, 3, namespace);
        /* LIMIT -1 is no limit in SQLite. */
        bind_int(&q, 4, limit > 0 && limit <= INT64_MAX ? (int64_t) limit : -1);
        int r;
        while ((r = query_step(&q, err)) > 0) {
                enum lg_event_type type;
                const char *obj = col_text(q.s, 2);
                if (parse_event_type(col_text(q.s, 1), &type) < 0 || !obj)
                        return corrupt(err, "events");
                if ((r = fn(sqlite3_column_int64(q.s, 0), type, obj, userdata)) < 0)
                        return r;
        }
        return r;
}

/* ---- revisions ------------------------------------------------------------ */

static int read_revision(sqlite3_stmt *s, struct lg_revision **ret, struct lg_error *err) {
        struct lg_revision *rev = calloc(1, sizeof(*rev));
        if (!rev)
                return lg_error_set(err, ENOMEM, "read revision");
        rev->number = sqlite3_column_int64(s, 0);
        rev->created_at = sqlite3_column_int64(s, 1);
        int r = lg_store_load_doc(col_text(s, 2), &rev->spec, err);
        if (r < 0) {
                free(rev);
                return r;
        }
        *ret = rev;
        return 0;
}

static int sq_rev_get(lg_store *st, const struct lg_resource_key *key, int64_t number,
                      struct lg_revision **ret, struct lg_error *err) {
        _cleanup_query_ struct query q =
                query(SS(st), number ? S_REV_GET : S_REV_LATEST, "read revision");
        bind_key(&q, key);
        if (number)
                bind_int(&q, 4, number);
        int r = query_row(&q, err);
        return r < 0 ? r : read_revision(q.s, ret, err);
}

static int sq_rev_insert(lg_store *st, const struct lg_resource_key *key, int64_t number,
                         int64_t created_at, const char *spec, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_REV_INSERT, "insert revision");
        bind_key(&q, key);
        bind_int(&q, 4, number);
        bind_int(&q, 5, created_at);
        bind_text(&q, 6, spec);
        return query_run(&q, err);
}

static int sq_rev_list(lg_store *st, const struct lg_resource_key *key, lg_store_revision_fn fn,
                       void *userdata, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_REV_LIST, "list revisions");
        bind_key(&q, key);
        int r;
        while ((r = query_step(&q, err)) > 0) {
                struct lg_revision *rev;
                if ((r = read_revision(q.s, &rev, err)) < 0 || (r = fn(rev, userdata)) < 0)
                        return r;
        }
        return r;
}

static int sq_rev_prune(lg_store *st, const struct lg_resource_key *key, int64_t below,
                        struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_REV_PRUNE, "prune revisions");
        bind_key(&q, key);
        bind_int(&q, 4, below);
        return query_write(&q, err);
}

/* ---- tokens --------------------------------------------------------------- */

static int read_token(sqlite3_stmt *s, struct lg_token *t, struct lg_error *err) {
        *t = (struct lg_token){0};
        if (lg_store_copy_field(t->id, sizeof(t->id), col_text(s, 0)) < 0 ||
            lg_store_copy_field(t->namespace, sizeof(t->namespace), col_text(s, 1)) < 0 ||
            lg_store_copy_field(t->description, sizeof(t->description), col_text(s, 2)) < 0 ||
            lg_store_copy_field(t->app, sizeof(t->app), col_text(s, 5)) < 0)
                return corrupt(err, "tokens");
        t->created_at = sqlite3_column_int64(s, 3);
        t->expires_at = sqlite3_column_int64(s, 4);
        return 0;
}

static int sq_tok_insert(lg_store *st, const struct lg_token *t, const char *hash,
                         struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_TOK_INSERT, "insert token");
        bind_text(&q, 1, t->id);
        bind_text(&q, 2, hash);
        bind_text(&q, 3, t->namespace);
        bind_text(&q, 4, t->description);
        bind_int(&q, 5, t->created_at);
        bind_int(&q, 6, t->expires_at);
        bind_text(&q, 7, t->app);
        return query_run(&q, err);
}

static int sq_tok_find(lg_store *st, const char *hash, struct lg_token *ret,
                       struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_TOK_FIND, "find token");
        bind_text(&q, 1, hash);
        int r = query_row(&q, err);
        return r < 0 ? r : read_token(q.s, ret, err);
}

static int sq_tok_list(lg_store *st, const char *namespace, const char *app, lg_store_token_fn fn,
                       void *userdata, struct lg_error *err) {
        _cleanup_query_ struct query q =
                query(SS(st), namespace ? S_TOK_LIST_NS : S_TOK_LIST, "list tokens");
        if (namespace) {
                bind_text(&q, 1, namespace);
                bind_text(&q, 2, app ? app : "");
        }
        int r;
        while ((r = query_step(&q, err)) > 0) {
                struct lg_token t;
                if ((r = read_token(q.s, &t, err)) < 0 || (r = fn(&t, userdata)) < 0)
                        return r;
        }
        return r;
}

/* A DELETE by one text column: 0, or -ENOENT when no row went. */
static int delete_by(lg_store *st, enum stmt_id id, const char *value, struct lg_error *err,
                     const char *what) {
        _cleanup_query_ struct query q = query(SS(st), id, what);
        bind_text(&q, 1, value);
        return found(query_write(&q, err));
}

static int sq_tok_delete(lg_store *st, const char *id, struct lg_error *err) {
        return delete_by(st, S_TOK_DELETE, id, err, "delete token");
}

/* ---- blobs ---------------------------------------------------------------- */

static int read_blob(sqlite3_stmt *s, struct lg_blob *b, struct lg_error *err) {
        *b = (struct lg_blob){0};
        if (lg_store_copy_field(b->digest, sizeof(b->digest), col_text(s, 0)) < 0 ||
            lg_store_copy_field(b->media_type, sizeof(b->media_type), col_text(s, 2)) < 0 ||
            sqlite3_column_int64(s, 1) < 0)
                return corrupt(err, "blobs");
        b->size = (uint64_t) sqlite3_column_int64(s, 1);
        b->created_at = sqlite3_column_int64(s, 3);
        b->refs = sqlite3_column_int64(s, 4);
        return 0;
}

static int sq_blob_insert(lg_store *st, const struct lg_blob *blob, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_BLOB_INSERT, "insert blob");
        bind_text(&q, 1, blob->digest);
        bind_int(&q, 2, (int64_t) blob->size);
        bind_text(&q, 3, blob->media_type);
        bind_int(&q, 4, blob->created_at);
        return query_run(&q, err);
}

static int sq_blob_get(lg_store *st, const char *digest, struct lg_blob *ret,
                       struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_BLOB_GET, "read blob");
        bind_text(&q, 1, digest);
        int r = query_row(&q, err);
        return r < 0 ? r : read_blob(q.s, ret, err);
}

static int sq_blob_list(lg_store *st, const struct lg_blob_filter *filter, lg_store_blob_fn fn,
                        void *userdata, struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_BLOB_LIST, "list blobs");
        bind_int(&q, 1, filter->unreferenced);
        bind_int(&q, 2, filter->created_before);
        int r;
        while ((r = query_step(&q, err)) > 0) {
                struct lg_blob blob;
                if ((r = read_blob(q.s, &blob, err)) < 0 || (r = fn(&blob, userdata)) < 0)
                        return r;
        }
        return r;
}

static int sq_blob_delete(lg_store *st, const char *digest, struct lg_error *err) {
        return delete_by(st, S_BLOB_DELETE, digest, err, "delete blob");
}

/* Insert or delete the reference of key to digest; how many rows changed. */
static int ref_write(lg_store *st, enum stmt_id id, const char *digest,
                     const struct lg_resource_key *key, struct lg_error *err, const char *what) {
        _cleanup_query_ struct query q = query(SS(st), id, what);
        bind_key(&q, key);
        bind_text(&q, 4, digest);
        return query_write(&q, err);
}

static int sq_ref_insert(lg_store *st, const char *digest, const struct lg_resource_key *key,
                         struct lg_error *err) {
        return ref_write(st, S_REF_INSERT, digest, key, err, "insert blob reference");
}

static int sq_ref_delete(lg_store *st, const char *digest, const struct lg_resource_key *key,
                         struct lg_error *err) {
        return found(ref_write(st, S_REF_DELETE, digest, key, err, "delete blob reference"));
}

static int read_ref(sqlite3_stmt *s, struct lg_resource_ref *ref, struct lg_error *err) {
        if (lg_store_copy_field(ref->kind, sizeof(ref->kind), col_text(s, 0)) < 0 ||
            lg_store_copy_field(ref->namespace, sizeof(ref->namespace), col_text(s, 1)) < 0 ||
            lg_store_copy_field(ref->name, sizeof(ref->name), col_text(s, 2)) < 0)
                return corrupt(err, "blob_refs");
        return 0;
}

static int sq_ref_list(lg_store *st, const char *digest, lg_store_ref_fn fn, void *userdata,
                       struct lg_error *err) {
        _cleanup_query_ struct query q = query(SS(st), S_REF_LIST, "list blob references");
        bind_text(&q, 1, digest);
        int r;
        while ((r = query_step(&q, err)) > 0) {
                struct lg_resource_ref ref;
                if ((r = read_ref(q.s, &ref, err)) < 0 || (r = fn(&ref, userdata)) < 0)
                        return r;
        }
        return r;
}

/* ---- opening -------------------------------------------------------------- */

static void sq_close(lg_store *st) {
        struct sqlite_store *ss = SS(st);
        for (size_t i = 0; i < N_STMTS; i++)
                sqlite3_finalize(ss->stmts[i]);
        sqlite3_close(ss->db);
        free(ss);
}

static const struct lg_store_ops sqlite_ops = {
        .name = "sqlite",
        .close = sq_close,
        .begin = sq_begin,
        .commit = sq_commit,
        .rollback = sq_rollback,
        .savepoint = sq_savepoint,
        .release = sq_release,
        .rollback_to = sq_rollback_to,
        .check = sq_check,
        .next_rv = sq_next_rv,
        .current_rv = sq_current_rv,
        .res_get = sq_res_get,
        .res_list = sq_res_list,
        .res_insert = sq_res_insert,
        .res_update = sq_res_update,
        .res_delete = sq_res_delete,
        .event_append = sq_event_append,
        .event_trim = sq_event_trim,
        .event_floor = sq_event_floor,
        .event_list = sq_event_list,
        .rev_get = sq_rev_get,
        .rev_insert = sq_rev_insert,
        .rev_list = sq_rev_list,
        .rev_prune = sq_rev_prune,
        .tok_insert = sq_tok_insert,
        .tok_find = sq_tok_find,
        .tok_list = sq_tok_list,
        .tok_delete = sq_tok_delete,
        .blob_insert = sq_blob_insert,
        .blob_get = sq_blob_get,
        .blob_list = sq_blob_list,
        .blob_delete = sq_blob_delete,
        .ref_insert = sq_ref_insert,
        .ref_delete = sq_ref_delete,
        .ref_list = sq_ref_list,
};

static int exec(struct sqlite_store *ss, const char *sql, struct lg_error *err, const char *what) {
        int rc = sqlite3_exec(ss->db, sql, NULL, NULL, NULL);
        return rc == SQLITE_OK ? 0 : fail(ss, rc, err, what);
}

/* The schema version of the open database; 0 for an empty one. */
static int schema_version(struct sqlite_store *ss, int64_t *ret, struct lg_error *err) {
        int64_t n;
        int r = query_int(ss,
                          "SELECT count(*) FROM sqlite_schema "
                          "WHERE type = 'table' AND name = 'legion_meta'",
                          &n, err);
        if (r < 0)
                return r;
        if (n == 0) {
                if ((r = query_int(ss,
                                   "SELECT count(*) FROM sqlite_schema "
                                   "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                                   &n, err)) < 0)
                        return r;
                if (n > 0)
                        return lg_error_set(err, EINVAL,
                                            "not a Legion store: it has tables but no legion_meta");
                *ret = 0;
                return 0;
        }
        r = query_int(ss, "SELECT value FROM legion_meta WHERE key = 'schema_version'", ret, err);
        if (r == -ENOENT)
                return lg_error_set(err, EUCLEAN, "legion_meta has no schema_version");
        return r;
}

static int migrate_locked(struct sqlite_store *ss, int target, struct lg_error *err) {
        int64_t version;
        int r = schema_version(ss, &version, err);
        if (r < 0)
                return r;
        if (version > lg_store_sqlite_schema_version || version > target)
                return lg_error_set(err, EOPNOTSUPP,
                                    "the database has schema version %" PRId64
                                    ", newer than this Legion's %d: upgrade Legion",
                                    version, target);
        if (version == target)
                return 0;
        for (size_t i = 0; i < ARRAY_SIZE(migrations); i++) {
                const struct migration *m = &migrations[i];
                if (m->version <= version || m->version > target)
                        continue;
                if ((r = exec(ss, m->sql, err, "schema migration")) < 0)
                        return lg_error_wrap(err, r, "to version %d", m->version);
        }
        _cleanup_query_ struct query q =
                query_sql(ss,
                          "INSERT INTO legion_meta (key, value) VALUES ('schema_version', ?1) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          "record schema version");
        bind_int(&q, 1, target);
        return query_run(&q, err);
}

static int migrate(struct sqlite_store *ss, int target, struct lg_error *err) {
        int r = exec(ss, "BEGIN IMMEDIATE", err, "begin migration");
        if (r < 0)
                return r;
        r = migrate_locked(ss, target, err);
        if (r >= 0)
                r = exec(ss, "COMMIT", err, "commit migration");
        if (r < 0 && !sqlite3_get_autocommit(ss->db))
                (void) sqlite3_exec(ss->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

static int configure(struct sqlite_store *ss, const struct lg_store_options *opts,
                     struct lg_error *err) {
        sqlite3_busy_timeout(ss->db, opts->busy_timeout_ms ? (int) opts->busy_timeout_ms : 5000);
        sqlite3_db_config(ss->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        sqlite3_db_config(ss->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
        char mode[8];
        int r = query_text(ss, "PRAGMA journal_mode = WAL", mode, sizeof(mode), err,
                           "set WAL mode");
        if (r < 0)
                return r;
        if (strcmp(mode, "wal") != 0)
                return lg_error_set(err, EIO, "the database refused WAL mode");
        int k;
        if ((k = exec(ss,
                      opts->sync == LG_STORE_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                         : "PRAGMA synchronous = FULL",
                      err, "set synchronous")) < 0 ||
            (k = exec(ss, "PRAGMA foreign_keys = ON", err, "enable foreign keys")) < 0 ||
            (k = exec(ss, "PRAGMA journal_size_limit = 67108864", err, "limit the WAL")) < 0)
                return k;
        return 0;
}

int lg_store_sqlite_open(const char *path, const struct lg_store_options *opts_in,
                         int target_version, lg_store **ret, struct lg_error *err) {
        struct lg_store_options o = opts_in ? *opts_in : (struct lg_store_options){0};
        const struct lg_store_options *opts = &o;
        if (target_version == 0)
                target_version = lg_store_sqlite_schema_version;
        if (target_version < 1 || target_version > lg_store_sqlite_schema_version)
                return lg_error_set(err, EINVAL, "no schema version %d", target_version);
        if (!path || !*path)
                return lg_error_set(err, EINVAL, "store path is empty");
        /* Create the file ourselves so that it (and the -wal and -shm files,
         * which SQLite gives the database's mode) is 0600, and so that a
         * symlink planted at the path is refused. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return lg_error_set(err, errno, "open store `%s`", path);
        /* App settings live here: a store left readable by others is
         * narrowed (this works only when we own the file, as legiond does). */
        struct stat sb;
        if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) && sb.st_uid == geteuid())
                (void) fchmod(fd, 0600);
        close(fd);

        struct sqlite_store *ss = calloc(1, sizeof(*ss));
        if (!ss)
                return lg_error_set(err, ENOMEM, "open store");
        ss->head.ops = &sqlite_ops;
        ss->head.events_keep = o.events_keep ? o.events_keep : LG_STORE_EVENTS_KEEP;
        _cleanup_store_ lg_store *st = &ss->head;
        int rc = sqlite3_open_v2(path, &ss->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW |
                                         SQLITE_OPEN_EXRESCODE,
                                 NULL);
        if (rc != SQLITE_OK) {
                if (!ss->db)
                        return lg_error_set(err, ENOMEM, "open store `%s`", path);
                return lg_error_set(err, errno_of(ss->db, rc), "open store `%s`: sqlite: %s", path,
                                    sqlite3_errmsg(ss->db));
        }
        int r;
        if ((r = configure(ss, opts, err)) < 0 || (r = migrate(ss, target_version, err)) < 0)
                return lg_error_wrap(err, r, "open store `%s`", path);
        *ret = TAKE_PTR(st);
        return 0;
}
