// Package sql holds the database schema and the named queries of Mail Queue.
//
// Migrations live in migrations/NNNN_name.up.sql (with a .down.sql beside
// each for manual rollback) and are applied in order by store.Migrate. Queries
// live in queries/*.sql as blocks introduced by a "-- name: ResourceVerb"
// comment, so every statement the service runs can be read in one place.
package sql

import "embed"

// Migrations holds the numbered schema migrations.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Queries holds the named queries, one file per table.
//
//go:embed queries/*.sql
var Queries embed.FS
