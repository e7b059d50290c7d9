package store

import (
	"bufio"
	"fmt"
	"io/fs"
	"reflect"
	"strings"

	mqsql "github.com/mailqueue/mailqueue/sql"
)

// queries holds every statement the store runs, loaded by name from
// sql/queries/*.sql. It embeds one struct per table, declared beside that
// table's methods; each field's name is the "-- name:" of its block, so a
// missing or misspelt query fails at start-up, not on first use.
type queries struct {
	appQueries
	apiKeyQueries
	queueQueries
	smtpConfigQueries
	emailQueries
	eventQueries
	idempotencyQueries
	healthQueries
	auditQueries
	usageQueries
	emailManageQueries  // cancel, retry
	scheduledJobQueries // recurring emails
	suppressionQueries
	batchQueries
}

// loadQueries parses the named blocks of every file in fsys and fills q.
func loadQueries(fsys fs.FS) (*queries, error) {
	blocks := map[string]string{}
	files, err := fs.Glob(fsys, "queries/*.sql")
	if err != nil {
		return nil, fmt.Errorf("listing query files: %w", err)
	}
	for _, file := range files {
		f, err := fsys.Open(file)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", file, err)
		}
		var name string
		var body strings.Builder
		flush := func() error {
			if name == "" {
				return nil
			}
			if _, dup := blocks[name]; dup {
				return fmt.Errorf("%s: query %s defined twice", file, name)
			}
			blocks[name] = strings.TrimSpace(body.String())
			body.Reset()
			return nil
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if n, ok := strings.CutPrefix(strings.TrimSpace(line), "-- name:"); ok {
				if err := flush(); err != nil {
					f.Close()
					return nil, err
				}
				name = strings.TrimSpace(n)
				continue
			}
			if name != "" {
				body.WriteString(line)
				body.WriteByte('\n')
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", file, err)
		}
		if err := flush(); err != nil {
			return nil, err
		}
	}

	q := &queries{}
	if err := fillQueries(reflect.ValueOf(q).Elem(), blocks); err != nil {
		return nil, err
	}
	for name := range blocks {
		return nil, fmt.Errorf("query %s in sql/queries is not used by the store", name)
	}
	return q, nil
}

// fillQueries sets each string field of v (recursing into embedded structs)
// to its named block, removing used blocks from the map.
func fillQueries(v reflect.Value, blocks map[string]string) error {
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if err := fillQueries(v.Field(i), blocks); err != nil {
				return err
			}
			continue
		}
		text, ok := blocks[f.Name]
		if !ok {
			return fmt.Errorf("query %s is missing from sql/queries", f.Name)
		}
		v.Field(i).SetString(text)
		delete(blocks, f.Name)
	}
	return nil
}

func mustLoadQueries() *queries {
	q, err := loadQueries(mqsql.Queries)
	if err != nil {
		panic(err) // the embedded files are part of the binary: a bad one is a build defect
	}
	return q
}
