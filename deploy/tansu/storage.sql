-- The tables Tansu 0.6's PostgreSQL storage engine reads and writes
-- (`--storage-engine postgres://…`). Tansu creates them only in its SQLite
-- engine; on PostgreSQL they must exist before a broker starts. Written for
-- this project from the engine's queries (tansu-storage 0.6, src/sql/*.sql
-- and src/pg/*.sql) and the column types its client binds (int for ids and
-- partitions, bigint for offsets and producer ids, smallint for attributes
-- and epochs, uuid, bytea, timestamp).
--
-- Applied by scripts/lab.sh (and by an operator, once, on a real cluster):
-- psql -v ON_ERROR_STOP=1 -f deploy/tansu/storage.sql "$TANSU_DATABASE_URL".
-- Every statement is idempotent.
--
-- The record and header tables are the hot ones: a fetch reads records by
-- (topition, offset_id), then each record's headers by the same key (both
-- primary keys). The brokers' own state (which broker leads what) is not
-- here: every broker on this storage leads every partition.

set client_min_messages = warning;

begin;

create table if not exists cluster (
    id int generated always as identity primary key,
    name text not null unique,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table if not exists topic (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    uuid uuid default gen_random_uuid(),
    partitions int not null,
    replication_factor int not null,
    is_internal bool default false not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

create table if not exists topic_configuration (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    name text not null,
    value text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (topic, name)
);

-- A topic's partition.
create table if not exists topition (
    id int generated always as identity primary key,
    topic int references topic (id) on delete cascade,
    partition int,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (topic, partition)
);

create table if not exists watermark (
    id int generated always as identity primary key,
    topition int unique references topition (id) on delete cascade,
    low bigint,
    high bigint,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

-- transaction_id: the writing transaction; a fetch at read_committed
-- isolation leaves out records of transactions still in progress.
create table if not exists record (
    topition int references topition (id) on delete cascade,
    offset_id bigint not null,
    transaction_id xid8 default pg_current_xact_id() not null,
    attributes smallint,
    producer_id bigint,
    producer_epoch smallint,
    timestamp timestamp,
    k bytea,
    v bytea,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    primary key (topition, offset_id)
);

create table if not exists header (
    topition int,
    offset_id bigint,
    k bytea,
    v bytea,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    primary key (topition, offset_id, k),
    foreign key (topition, offset_id) references record (topition, offset_id) on delete cascade
);

create table if not exists consumer_group (
    id int generated always as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    name text not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

create table if not exists consumer_group_detail (
    id int generated always as identity primary key,
    consumer_group int unique references consumer_group (id) on delete cascade,
    e_tag uuid not null,
    detail json not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table if not exists consumer_offset (
    id int generated always as identity primary key,
    consumer_group int references consumer_group (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    timestamp timestamp,
    metadata text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (consumer_group, topition)
);

create table if not exists producer (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table if not exists producer_epoch (
    id int generated by default as identity primary key,
    producer bigint references producer (id) on delete cascade,
    epoch smallint default 0 not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (producer, epoch)
);

create table if not exists producer_detail (
    id bigint generated by default as identity primary key,
    producer_epoch int references producer_epoch (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    sequence int default 0 not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (producer_epoch, topition)
);

create table if not exists txn (
    id bigint generated always as identity primary key,
    cluster int references cluster (id) on delete cascade,
    name text,
    producer bigint references producer (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, name)
);

-- status: BEGIN, PREPARE_COMMIT, PREPARE_ABORT, COMMITTED or ABORTED.
create table if not exists txn_detail (
    id bigint generated always as identity primary key,
    transaction bigint references txn (id) on delete cascade,
    producer_epoch int references producer_epoch (id) on delete cascade,
    transaction_timeout_ms int not null,
    started_at timestamp,
    status text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (transaction, producer_epoch)
);

create table if not exists txn_topition (
    id int generated always as identity primary key,
    txn_detail int references txn_detail (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (txn_detail, topition)
);

create table if not exists txn_produce_offset (
    id int generated always as identity primary key,
    txn_topition int unique references txn_topition (id) on delete cascade,
    offset_start bigint,
    offset_end bigint,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null
);

create table if not exists txn_offset_commit (
    id int generated always as identity primary key,
    txn_detail int references txn_detail (id) on delete cascade,
    consumer_group int references consumer_group (id) on delete cascade,
    generation_id int,
    member_id text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (txn_detail, consumer_group)
);

create table if not exists txn_offset_commit_tp (
    id int generated always as identity primary key,
    offset_commit int references txn_offset_commit (id) on delete cascade,
    topition int references topition (id) on delete cascade,
    committed_offset bigint,
    leader_epoch int,
    metadata text,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (offset_commit, topition)
);

-- SASL/SCRAM users (`tansu user create`), when the brokers authenticate.
create table if not exists scram_credential (
    id bigint generated by default as identity primary key,
    cluster int not null references cluster (id) on delete cascade,
    username text,
    mechanism int,
    salt bytea not null,
    iterations int not null,
    stored_key bytea not null,
    server_key bytea not null,
    last_updated timestamp default current_timestamp not null,
    created_at timestamp default current_timestamp not null,
    unique (cluster, username, mechanism)
);

commit;
