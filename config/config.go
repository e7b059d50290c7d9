// Package config loads Mail Queue's settings from the environment.
//
// Every setting is read once at start-up into one typed Config, validated,
// and passed down; nothing else in the service reads the environment. Each
// variable X also accepts X_FILE naming a file that holds the value, so
// secrets can come from mounted files instead of the process environment.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Config is every setting of the service. Field tags name the environment
// variable and the default that works on a laptop.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string.
	DatabaseURL string `envconfig:"MQ_DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/mailqueue?sslmode=disable"`
	// RedisAddrs is one address for a single Redis node, several for a cluster.
	RedisAddrs []string `envconfig:"MQ_REDIS_ADDRS" default:"127.0.0.1:6379"`
	// HTTPAddr is where the REST API listens.
	HTTPAddr string `envconfig:"MQ_HTTP_ADDR" default:"127.0.0.1:8080"`
	// AdminSecret authorises the admin endpoints (/v1/apps, /riverui).
	AdminSecret string `envconfig:"MQ_ADMIN_SECRET"`
	// EncryptionKey is base64 of 32 bytes; it encrypts secrets at rest.
	EncryptionKey string `envconfig:"MQ_ENCRYPTION_KEY"`
	// EncryptionKeysPrevious are earlier encryption keys (base64, comma
	// separated), still able to open secrets sealed before a rotation.
	EncryptionKeysPrevious []string `envconfig:"MQ_ENCRYPTION_KEYS_PREVIOUS"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed when
	// finding a client's address (for IP allowlists and the audit log).
	TrustedProxies []string `envconfig:"MQ_TRUSTED_PROXIES"`
	// APIKeyGracePeriod is how long a rotated key keeps working by default.
	APIKeyGracePeriod time.Duration `envconfig:"MQ_API_KEY_GRACE_PERIOD" default:"24h"`
	// DefaultSMTPURL is where email goes when its queue has no SMTP config.
	DefaultSMTPURL string `envconfig:"MQ_DEFAULT_SMTP_URL" default:"smtp://127.0.0.1:1025"`
	// SMTPAllowPrivate lets apps' SMTP configs reach loopback, private and
	// link-local addresses. Off by default: a tenant could otherwise use the
	// sender to probe the operator's network or a cloud metadata service.
	// The default server (MQ_DEFAULT_SMTP_URL) is the operator's own and is
	// never restricted.
	SMTPAllowPrivate bool `envconfig:"MQ_SMTP_ALLOW_PRIVATE" default:"false"`
	// DefaultSMTPPoolSize is how many connections the default SMTP server gets.
	DefaultSMTPPoolSize int `envconfig:"MQ_DEFAULT_SMTP_POOL_SIZE" default:"8"`
	// PublicURL is the address recipients' mail clients reach (tracking links).
	PublicURL string `envconfig:"MQ_PUBLIC_URL" default:"http://127.0.0.1:8080"`
	// InboundAddr is where the bounce-receiving SMTP server listens.
	InboundAddr string `envconfig:"MQ_INBOUND_ADDR" default:"127.0.0.1:2525"`
	// InboundDomain is the mail domain whose MX is the inbound server; the
	// mailto of List-Unsubscribe is unsubscribe+<token>@ it. Empty means the
	// host of MQ_PUBLIC_URL.
	InboundDomain string `envconfig:"MQ_INBOUND_DOMAIN"`
	// LogFormat is json (production) or text (reading by eye).
	LogFormat string `envconfig:"MQ_LOG_FORMAT" default:"json"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `envconfig:"MQ_LOG_LEVEL" default:"info"`
	// Workers is the total number of concurrent send workers, shared out
	// between the priority lanes. Workers are goroutines, mostly waiting
	// for a pooled SMTP connection or a shared round trip: more of them
	// make the shared reads and writes larger, and cheaper per email
	// (bench/results/2026-11-28-workers.md: 128 → 1,900/s, 512 → 3,400/s).
	Workers int `envconfig:"MQ_WORKERS" default:"512"`
	// FetchCooldown is the shortest pause between two fetches of jobs by one
	// lane. With River's default (100 ms) a lane of N workers can start at
	// most 10·N jobs a second, far below what the SMTP side can take.
	FetchCooldown time.Duration `envconfig:"MQ_FETCH_COOLDOWN" default:"5ms"`
	// ShutdownTimeout bounds the wait for in-flight sends on SIGTERM.
	ShutdownTimeout time.Duration `envconfig:"MQ_SHUTDOWN_TIMEOUT" default:"30s"`
	// JobRescueAfter is how long a job may sit in "running" after its
	// process died before another worker takes it over.
	JobRescueAfter time.Duration `envconfig:"MQ_JOB_RESCUE_AFTER" default:"10m"`
	// ScheduleInterval is how often the leader looks for due scheduled jobs.
	ScheduleInterval time.Duration `envconfig:"MQ_SCHEDULE_INTERVAL" default:"15s"`
	// MaxBodyBytes caps a request body (413 above it).
	MaxBodyBytes int64 `envconfig:"MQ_MAX_BODY_BYTES" default:"1048576"`
	// MaxBatchBodyBytes caps the body of POST /v1/emails/batch.
	MaxBatchBodyBytes int64 `envconfig:"MQ_MAX_BATCH_BODY_BYTES" default:"10485760"`
	// DBMaxConns caps the PostgreSQL pool of one process.
	DBMaxConns int32 `envconfig:"MQ_DB_MAX_CONNS" default:"40"`
	// PprofAddr, when set, serves Go's profiler (net/http/pprof) there. Keep
	// it on a loopback address: profiles reveal internals.
	PprofAddr string `envconfig:"MQ_PPROF_ADDR"`

	// Circuit breaker per SMTP host (DESIGN.md, decision 7): it opens after
	// BreakerFailures consecutive failures, lets one probe through after
	// BreakerOpenFor, and closes after BreakerSuccesses successful probes.
	BreakerFailures  int           `envconfig:"MQ_BREAKER_FAILURES" default:"5"`
	BreakerOpenFor   time.Duration `envconfig:"MQ_BREAKER_OPEN_FOR" default:"30s"`
	BreakerSuccesses int           `envconfig:"MQ_BREAKER_SUCCESSES" default:"3"`
	// Rate limits (ratelimit package). RedisPrefix starts every Redis key,
	// so services or tests sharing a Redis keep their limits apart.
	RedisPrefix string `envconfig:"MQ_REDIS_PREFIX" default:"mq:"`
	// GlobalRateLimit caps all email sent, in emails/minute; 0 = unlimited.
	GlobalRateLimit int `envconfig:"MQ_GLOBAL_RATE_LIMIT" default:"0"`
	// APIRateLimit is each API key's requests/second (burst the same) unless
	// the key has its own rate_limit; 0 = keys without one are unlimited.
	APIRateLimit int `envconfig:"MQ_API_RATE_LIMIT" default:"1000"`
	// RateLimitProcesses is how many processes share the limits: while
	// Redis is unreachable each allows 1/N of every limit on its own.
	RateLimitProcesses int `envconfig:"MQ_RATE_LIMIT_PROCESSES" default:"1"`

	encryptionKey  []byte
	previousKeys   [][]byte
	trustedProxies []netip.Prefix
}

// Load reads the configuration from the environment. It resolves X_FILE
// variables first, then applies defaults and checks every value that does
// not depend on which command runs.
func Load() (*Config, error) {
	if err := resolveFiles(); err != nil {
		return nil, err
	}
	var c Config
	// Full names and no prefix: with a prefix, envconfig falls back to the
	// bare name (DATABASE_URL for MQ_DATABASE_URL), letting unrelated
	// variables of the host change Mail Queue's settings.
	if err := envconfig.Process("", &c); err != nil {
		return nil, fmt.Errorf("reading MQ_ settings: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// resolveFiles sets MQ_X from the file named by MQ_X_FILE when MQ_X is unset.
func resolveFiles() error {
	for _, kv := range os.Environ() {
		name, path, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "MQ_") || !strings.HasSuffix(name, "_FILE") {
			continue
		}
		target := strings.TrimSuffix(name, "_FILE")
		if _, set := os.LookupEnv(target); set {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: reading %s: %w", name, path, err)
		}
		if err := os.Setenv(target, strings.TrimRight(string(b), "\r\n")); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("MQ_%s: "+format, append([]any{name}, args...)...))
	}
	if _, err := url.Parse(c.DatabaseURL); err != nil || c.DatabaseURL == "" {
		bad("DATABASE_URL", "must be a postgres:// URL")
	}
	if len(c.RedisAddrs) == 0 {
		bad("REDIS_ADDRS", "must name at least one host:port")
	}
	for _, a := range c.RedisAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			bad("REDIS_ADDRS", "%q is not host:port", a)
		}
	}
	for name, addr := range map[string]string{"HTTP_ADDR": c.HTTPAddr, "INBOUND_ADDR": c.InboundAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(name, "%q is not host:port", addr)
		}
	}
	if _, err := ParseSMTPURL(c.DefaultSMTPURL); err != nil {
		bad("DEFAULT_SMTP_URL", "%v", err)
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("PUBLIC_URL", "must be an http:// or https:// URL")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "must be json or text, not %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.Workers < 4 {
		bad("WORKERS", "must be at least 4 (one per priority lane), not %d", c.Workers)
	}
	if c.DefaultSMTPPoolSize < 1 {
		bad("DEFAULT_SMTP_POOL_SIZE", "must be at least 1")
	}
	if c.MaxBodyBytes < 1024 {
		bad("MAX_BODY_BYTES", "must be at least 1024")
	}
	if c.DBMaxConns < 4 {
		bad("DB_MAX_CONNS", "must be at least 4")
	}
	if c.EncryptionKey != "" {
		k, err := base64.StdEncoding.DecodeString(c.EncryptionKey)
		if err != nil || len(k) != 32 {
			bad("ENCRYPTION_KEY", "must be base64 of exactly 32 bytes (generate one with: openssl rand -base64 32)")
		}
		c.encryptionKey = k
	}
	for i, s := range c.EncryptionKeysPrevious {
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(k) != 32 {
			bad("ENCRYPTION_KEYS_PREVIOUS", "key %d must be base64 of exactly 32 bytes", i+1)
			continue
		}
		c.previousKeys = append(c.previousKeys, k)
	}
	for _, s := range c.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			bad("TRUSTED_PROXIES", "%q is not a CIDR or IP address", s)
			continue
		}
		c.trustedProxies = append(c.trustedProxies, p.Masked())
	}
	if c.MaxBatchBodyBytes < c.MaxBodyBytes {
		bad("MAX_BATCH_BODY_BYTES", "must be at least MQ_MAX_BODY_BYTES")
	}
	if c.FetchCooldown < time.Millisecond || c.FetchCooldown > time.Second {
		bad("FETCH_COOLDOWN", "must be between 1ms and 1s, not %s", c.FetchCooldown)
	}
	if c.APIKeyGracePeriod < 0 {
		bad("API_KEY_GRACE_PERIOD", "must not be negative")
	}
	if c.BreakerFailures < 1 || c.BreakerSuccesses < 1 {
		bad("BREAKER_FAILURES", "and MQ_BREAKER_SUCCESSES must be at least 1")
	}
	if c.BreakerOpenFor < time.Second {
		bad("BREAKER_OPEN_FOR", "must be at least 1s, not %s", c.BreakerOpenFor)
	}
	c.validateRateLimits(bad)
	return errors.Join(errs...)
}

// Require checks the settings that only some commands need: the API
// (serve, all) needs the admin secret, and everything that reads or writes
// stored secrets (serve, work, all) needs the encryption key. migrate and
// inbound need neither.
func (c *Config) Require(command string) error {
	var errs []error
	api := command == "serve" || command == "all"
	if api && len(c.AdminSecret) < 16 {
		errs = append(errs, errors.New("MQ_ADMIN_SECRET: must be set to at least 16 characters (generate one with: openssl rand -hex 24)"))
	}
	if (api || command == "work") && c.encryptionKey == nil {
		errs = append(errs, errors.New("MQ_ENCRYPTION_KEY: must be set to base64 of 32 bytes (generate one with: openssl rand -base64 32)"))
	}
	return errors.Join(errs...)
}

// EncryptionKeyBytes returns the decoded MQ_ENCRYPTION_KEY, or nil if unset.
func (c *Config) EncryptionKeyBytes() []byte { return c.encryptionKey }

// PreviousEncryptionKeys returns the decoded MQ_ENCRYPTION_KEYS_PREVIOUS.
func (c *Config) PreviousEncryptionKeys() [][]byte { return c.previousKeys }

// InboundMailDomain returns MQ_INBOUND_DOMAIN, or the host of MQ_PUBLIC_URL.
func (c *Config) InboundMailDomain() string {
	if c.InboundDomain != "" {
		return c.InboundDomain
	}
	if u, err := url.Parse(c.PublicURL); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return "localhost"
}

// TrustedProxyPrefixes returns the parsed MQ_TRUSTED_PROXIES.
func (c *Config) TrustedProxyPrefixes() []netip.Prefix { return c.trustedProxies }

// SMTPURL is a parsed smtp:// or smtps:// address.
type SMTPURL struct {
	Host     string
	Port     int
	Username string
	Password string
	// TLS is "none" for smtp:// (STARTTLS used opportunistically) and "tls"
	// for smtps:// (implicit TLS).
	TLS string
}

// ParseSMTPURL parses smtp://[user:pass@]host:port or smtps://….
func ParseSMTPURL(s string) (*SMTPURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	out := &SMTPURL{Host: u.Hostname()}
	switch u.Scheme {
	case "smtp":
		out.TLS, out.Port = "none", 25
	case "smtps":
		out.TLS, out.Port = "tls", 465
	default:
		return nil, fmt.Errorf("scheme must be smtp or smtps, not %q", u.Scheme)
	}
	if out.Host == "" {
		return nil, errors.New("missing host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("bad port %q", p)
		}
		out.Port = n
	}
	if u.User != nil {
		out.Username = u.User.Username()
		out.Password, _ = u.User.Password()
	}
	return out, nil
}
