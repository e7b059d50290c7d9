package config_test

// These tests change the process environment, so none of them is parallel.

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/config"
)

// settings are the names of Config's variables without the MQ_ prefix.
var settings = []string{
	"DATABASE_URL", "REDIS_ADDRS", "HTTP_ADDR", "ADMIN_SECRET", "ENCRYPTION_KEY", "DEFAULT_SMTP_URL",
	"DEFAULT_SMTP_POOL_SIZE", "PUBLIC_URL", "INBOUND_ADDR", "LOG_FORMAT", "LOG_LEVEL", "WORKERS",
	"SHUTDOWN_TIMEOUT", "JOB_RESCUE_AFTER", "MAX_BODY_BYTES", "DB_MAX_CONNS", "ENCRYPTION_KEYS_PREVIOUS",
	"TRUSTED_PROXIES", "API_KEY_GRACE_PERIOD", "MAX_BATCH_BODY_BYTES",
}

// unset removes name from the environment for the rest of the test; the
// previous value comes back when it ends.
func unset(t *testing.T, name string) {
	t.Helper()
	t.Setenv(name, "") // records the old value for restoring
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

// cleanEnv starts the test from an environment with no Mail Queue settings,
// so whatever the machine running the tests has set does not leak in.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "MQ_") {
			unset(t, name)
		}
	}
	for _, s := range settings {
		unset(t, "MQ_"+s)
		unset(t, s)
	}
}

func load(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func loadErr(t *testing.T, names ...string) error {
	t.Helper()
	cfg, err := config.Load()
	if err == nil {
		t.Fatalf("Load succeeded (%+v), want an error naming %v", cfg, names)
	}
	if cfg != nil {
		t.Errorf("Load returned a config with its error")
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
	return err
}

func key(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func TestLoadDefaults(t *testing.T) {
	cleanEnv(t)
	cfg := load(t)
	if cfg.DatabaseURL != "postgres://postgres@127.0.0.1:5432/mailqueue?sslmode=disable" ||
		len(cfg.RedisAddrs) != 1 || cfg.RedisAddrs[0] != "127.0.0.1:6379" ||
		cfg.HTTPAddr != "127.0.0.1:8080" || cfg.DefaultSMTPURL != "smtp://127.0.0.1:1025" ||
		cfg.DefaultSMTPPoolSize != 8 || cfg.PublicURL != "http://127.0.0.1:8080" ||
		cfg.InboundAddr != "127.0.0.1:2525" || cfg.LogFormat != "json" || cfg.LogLevel != "info" ||
		cfg.Workers != 512 || cfg.ShutdownTimeout != 30*time.Second || cfg.JobRescueAfter != 10*time.Minute ||
		cfg.MaxBodyBytes != 1<<20 || cfg.DBMaxConns != 40 {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.AdminSecret != "" || cfg.EncryptionKeyBytes() != nil {
		t.Errorf("secrets set without configuration: %q, %v", cfg.AdminSecret, cfg.EncryptionKeyBytes())
	}
	err := cfg.Require("serve")
	if err == nil || !strings.Contains(err.Error(), "MQ_ADMIN_SECRET") || !strings.Contains(err.Error(), "MQ_ENCRYPTION_KEY") {
		t.Errorf("Require(serve) without secrets = %v, want both named", err)
	}
}

func TestLoadReadsSettings(t *testing.T) {
	cleanEnv(t)
	t.Setenv("MQ_REDIS_ADDRS", "10.0.0.1:7000,10.0.0.2:7001")
	t.Setenv("MQ_WORKERS", "16")
	t.Setenv("MQ_SHUTDOWN_TIMEOUT", "5s")
	t.Setenv("MQ_LOG_FORMAT", "text")
	t.Setenv("MQ_ADMIN_SECRET", "0123456789abcdef")
	t.Setenv("MQ_ENCRYPTION_KEY", key(32))
	cfg := load(t)
	if len(cfg.RedisAddrs) != 2 || cfg.RedisAddrs[1] != "10.0.0.2:7001" || cfg.Workers != 16 ||
		cfg.ShutdownTimeout != 5*time.Second || cfg.LogFormat != "text" {
		t.Errorf("config = %+v", cfg)
	}
	if k := cfg.EncryptionKeyBytes(); len(k) != 32 {
		t.Errorf("EncryptionKeyBytes = %d bytes, want 32", len(k))
	}
	if err := cfg.Require("all"); err != nil {
		t.Errorf("Require(all) with both set: %v", err)
	}
}

func TestLoadRejectsBadEncryptionKey(t *testing.T) {
	for name, value := range map[string]string{
		"not base64": "this is not base64!",
		"16 bytes":   key(16),
		"33 bytes":   key(33),
		"url base64": base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)), // "-_" alphabet
	} {
		t.Run(name, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv("MQ_ENCRYPTION_KEY", value)
			loadErr(t, "MQ_ENCRYPTION_KEY")
		})
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"HTTP_ADDR", "8080"},
		{"HTTP_ADDR", "localhost"},
		{"INBOUND_ADDR", "nope"},
		{"DEFAULT_SMTP_URL", "http://127.0.0.1:1025"},
		{"DEFAULT_SMTP_URL", "smtp://127.0.0.1:99999"},
		{"PUBLIC_URL", "ftp://example.com"},
		{"PUBLIC_URL", "https://"},
		{"REDIS_ADDRS", "redis-without-port"},
		{"LOG_FORMAT", "xml"},
		{"LOG_LEVEL", "verbose"},
		{"WORKERS", "3"},
		{"DEFAULT_SMTP_POOL_SIZE", "0"},
		{"MAX_BODY_BYTES", "100"},
		{"DB_MAX_CONNS", "2"},
		{"DATABASE_URL", "postgres://bad host/%zz"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv("MQ_"+tc.name, tc.value)
			loadErr(t, "MQ_"+tc.name)
		})
	}
}

func TestLoadRejectsUnparsableNumbers(t *testing.T) {
	cleanEnv(t)
	t.Setenv("MQ_WORKERS", "many")
	loadErr(t, "WORKERS")
}

func TestLoadReportsEveryError(t *testing.T) {
	cleanEnv(t)
	t.Setenv("MQ_HTTP_ADDR", "8080")
	t.Setenv("MQ_LOG_FORMAT", "xml")
	t.Setenv("MQ_WORKERS", "1")
	t.Setenv("MQ_ENCRYPTION_KEY", "short")
	t.Setenv("MQ_DEFAULT_SMTP_URL", "http://x")
	loadErr(t, "MQ_HTTP_ADDR", "MQ_LOG_FORMAT", "MQ_WORKERS", "MQ_ENCRYPTION_KEY", "MQ_DEFAULT_SMTP_URL")
}

func TestLoadReadsSecretFromFile(t *testing.T) {
	cleanEnv(t)
	path := filepath.Join(t.TempDir(), "admin_secret")
	if err := os.WriteFile(path, []byte("from-a-file-0123456789\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MQ_ADMIN_SECRET_FILE", path)
	t.Setenv("MQ_ENCRYPTION_KEY", key(32))
	cfg := load(t)
	if cfg.AdminSecret != "from-a-file-0123456789" {
		t.Errorf("AdminSecret = %q, want the file's content without the line end", cfg.AdminSecret)
	}
	if err := cfg.Require("serve"); err != nil {
		t.Errorf("Require(serve): %v", err)
	}
}

func TestLoadPrefersVariableOverFile(t *testing.T) {
	cleanEnv(t)
	path := filepath.Join(t.TempDir(), "admin_secret")
	if err := os.WriteFile(path, []byte("from-the-file-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MQ_ADMIN_SECRET_FILE", path)
	t.Setenv("MQ_ADMIN_SECRET", "from-the-variable-0123")
	if cfg := load(t); cfg.AdminSecret != "from-the-variable-0123" {
		t.Errorf("AdminSecret = %q, want the variable's value", cfg.AdminSecret)
	}
}

func TestLoadMissingSecretFile(t *testing.T) {
	cleanEnv(t)
	t.Setenv("MQ_ADMIN_SECRET_FILE", filepath.Join(t.TempDir(), "absent"))
	loadErr(t, "MQ_ADMIN_SECRET_FILE")
}

func TestRequire(t *testing.T) {
	type want struct{ secret, key bool } // which errors are expected
	for _, tc := range []struct {
		name, secret, key string
		commands          map[string]want
	}{
		{"nothing set", "", "", map[string]want{
			"serve": {true, true}, "all": {true, true}, "work": {false, true},
			"migrate": {false, false}, "inbound": {false, false},
		}},
		{"short secret", "only-15-chars!!", key(32), map[string]want{
			"serve": {true, false}, "all": {true, false}, "work": {false, false},
		}},
		{"no key", "0123456789abcdef", "", map[string]want{
			"serve": {false, true}, "work": {false, true}, "migrate": {false, false},
		}},
		{"both set", "0123456789abcdef", key(32), map[string]want{
			"serve": {}, "all": {}, "work": {}, "migrate": {}, "inbound": {},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			if tc.secret != "" {
				t.Setenv("MQ_ADMIN_SECRET", tc.secret)
			}
			if tc.key != "" {
				t.Setenv("MQ_ENCRYPTION_KEY", tc.key)
			}
			cfg := load(t)
			for cmd, w := range tc.commands {
				err := cfg.Require(cmd)
				msg := ""
				if err != nil {
					msg = err.Error()
				}
				if got := strings.Contains(msg, "MQ_ADMIN_SECRET:"); got != w.secret {
					t.Errorf("Require(%s) = %q: names MQ_ADMIN_SECRET %v, want %v", cmd, msg, got, w.secret)
				}
				if got := strings.Contains(msg, "MQ_ENCRYPTION_KEY:"); got != w.key {
					t.Errorf("Require(%s) = %q: names MQ_ENCRYPTION_KEY %v, want %v", cmd, msg, got, w.key)
				}
			}
		})
	}
}

// Every variable is MQ_-prefixed: an unrelated DATABASE_URL or LOG_LEVEL in
// the environment (set by a platform or another program) must not change
// Mail Queue's settings.
func TestLoadIgnoresUnprefixedVariables(t *testing.T) {
	cleanEnv(t)
	t.Setenv("DATABASE_URL", "postgres://someone-else@db.example.com/other")
	t.Setenv("LOG_LEVEL", "TRACE")
	t.Setenv("WORKERS", "2")
	cfg, err := config.Load()
	if err != nil {
		t.Fatalf("Load with unprefixed LOG_LEVEL/WORKERS/DATABASE_URL set: %v", err)
	}
	if cfg.DatabaseURL != "postgres://postgres@127.0.0.1:5432/mailqueue?sslmode=disable" {
		t.Errorf("DatabaseURL = %q, taken from DATABASE_URL instead of MQ_DATABASE_URL", cfg.DatabaseURL)
	}
}

func TestParseSMTPURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.SMTPURL
	}{
		{"smtp://mail.example.com", config.SMTPURL{Host: "mail.example.com", Port: 25, TLS: "none"}},
		{"smtps://mail.example.com", config.SMTPURL{Host: "mail.example.com", Port: 465, TLS: "tls"}},
		{"smtp://127.0.0.1:1025", config.SMTPURL{Host: "127.0.0.1", Port: 1025, TLS: "none"}},
		{"smtps://u:p@mail.example.com:2465", config.SMTPURL{Host: "mail.example.com", Port: 2465, Username: "u", Password: "p", TLS: "tls"}},
		{"smtp://user%40example.com:p%3Ass%40w@relay:587", config.SMTPURL{Host: "relay", Port: 587, Username: "user@example.com", Password: "p:ss@w", TLS: "none"}},
		{"smtp://apikey@relay:587", config.SMTPURL{Host: "relay", Port: 587, Username: "apikey", TLS: "none"}},
		{"smtp://[::1]:2525", config.SMTPURL{Host: "::1", Port: 2525, TLS: "none"}},
	} {
		got, err := config.ParseSMTPURL(tc.in)
		if err != nil {
			t.Errorf("ParseSMTPURL(%q): %v", tc.in, err)
			continue
		}
		if *got != tc.want {
			t.Errorf("ParseSMTPURL(%q) = %+v, want %+v", tc.in, *got, tc.want)
		}
	}
	for _, in := range []string{
		"", "mail.example.com:25", "http://mail.example.com", "smtp://", "smtp://:25",
		"smtp://h:0", "smtp://h:65536", "smtp://h:abc", "smtp://h:-1", "smtp ://h",
	} {
		if got, err := config.ParseSMTPURL(in); err == nil {
			t.Errorf("ParseSMTPURL(%q) = %+v, want an error", in, got)
		}
	}
}
