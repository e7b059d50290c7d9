package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// SMTP configs hold a relay password, so three rules run through this
// file: the password is sealed with h.box before it reaches the store, it
// never appears in a response or an audit entry (both use oas.SmtpConfig,
// which has only has_password), and it is never logged.

// CreateSmtpConfig stores one of the calling app's SMTP relays.
func (h *Handler) CreateSmtpConfig(ctx context.Context, req *oas.SmtpConfigCreate, params oas.CreateSmtpConfigParams) (*oas.SmtpConfig, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	id, _ := store.NewID()
	c := &store.SMTPConfig{
		ID: id, AppID: pr.appID, Name: req.Name, Host: req.Host, Port: int32(req.Port),
		Encryption: string(req.Encryption.Or(oas.SmtpEncryptionStarttls)),
		PoolSize:   int32(req.PoolSize.Or(5)), TimeoutMS: int32(req.TimeoutMs.Or(30000)),
	}
	if v, ok := req.Username.Get(); ok {
		c.Username = &v
	}
	password, hasPassword := req.Password.Get()
	if err := validateSMTPConfig(c, password, hasPassword, h.cfg.SMTPAllowPrivate); err != nil {
		return nil, err
	}
	if hasPassword {
		if err := h.sealSMTPPassword(c, password); err != nil {
			return nil, err
		}
	}
	fingerprint := smtpCreateFingerprint{req: req, password: h.passwordDigest(password)}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createSmtpConfig", fingerprint, http.StatusCreated,
		func(tx *store.Store) (*oas.SmtpConfig, error) {
			saved, err := tx.SMTPConfigInsert(ctx, c)
			if errors.Is(err, store.ErrConflict) {
				return nil, conflict("already_exists", "an SMTP config named %q already exists", req.Name)
			}
			if err != nil {
				return nil, err
			}
			out := smtpConfigToAPI(saved)
			if err := h.audit(ctx, tx, auditEntry{
				action: "smtp_config.create", resourceType: "smtp_config", resourceID: saved.ID,
				appID: pr.appID, after: &out,
			}); err != nil {
				return nil, err
			}
			return &out, nil
		})
}

// ListSmtpConfigs lists the calling app's SMTP configs, newest first.
func (h *Handler) ListSmtpConfigs(ctx context.Context, params oas.ListSmtpConfigsParams) (*oas.SmtpConfigList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.SMTPConfigListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.SMTPConfigList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.SmtpConfigList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, smtpConfigToAPI)
	return out, nil
}

// GetSmtpConfig returns one of the calling app's SMTP configs.
func (h *Handler) GetSmtpConfig(ctx context.Context, params oas.GetSmtpConfigParams) (*oas.SmtpConfig, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	c, err := h.store.SMTPConfigGet(ctx, pr.appID, params.SmtpConfigId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("SMTP config")
	}
	if err != nil {
		return nil, err
	}
	out := smtpConfigToAPI(c)
	return &out, nil
}

// UpdateSmtpConfig changes the fields present in the request. Senders pick
// the change up within their resolver's cache lifetime; the pools of the
// old settings are no longer used and close when idle.
func (h *Handler) UpdateSmtpConfig(ctx context.Context, req *oas.SmtpConfigUpdate, params oas.UpdateSmtpConfigParams) (*oas.SmtpConfig, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	var out oas.SmtpConfig
	err = h.store.Tx(ctx, func(tx *store.Store) error {
		old, err := tx.SMTPConfigLock(ctx, pr.appID, params.SmtpConfigId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("SMTP config")
		}
		if err != nil {
			return err
		}
		next := *old
		if v, ok := req.Name.Get(); ok {
			next.Name = v
		}
		if v, ok := req.Host.Get(); ok {
			next.Host = v
		}
		if v, ok := req.Port.Get(); ok {
			next.Port = int32(v)
		}
		if req.Username.IsSet() {
			next.Username = nil
			if v, ok := req.Username.Get(); ok {
				next.Username = &v
			}
		}
		if v, ok := req.Encryption.Get(); ok {
			next.Encryption = string(v)
		}
		if v, ok := req.PoolSize.Get(); ok {
			next.PoolSize = int32(v)
		}
		if v, ok := req.TimeoutMs.Get(); ok {
			next.TimeoutMS = int32(v)
		}
		if v, ok := req.IsActive.Get(); ok {
			next.IsActive = v
		}
		password, setPassword := req.Password.Get()
		if req.Password.IsSet() && !setPassword { // null: remove it
			next.Password, next.PasswordKeyID = nil, nil
		}
		if err := validateSMTPConfig(&next, password, setPassword, h.cfg.SMTPAllowPrivate); err != nil {
			return err
		}
		// A stored password without a username would never be sent: AUTH
		// needs both, so removing the username removes authentication.
		if next.Username == nil && !setPassword {
			next.Password, next.PasswordKeyID = nil, nil
		}
		if setPassword {
			if err := h.sealSMTPPassword(&next, password); err != nil {
				return err
			}
		}
		saved, err := tx.SMTPConfigUpdate(ctx, &next)
		switch {
		case errors.Is(err, store.ErrConflict):
			return conflict("already_exists", "an SMTP config named %q already exists", next.Name)
		case errors.Is(err, store.ErrNotFound):
			return notFound("SMTP config")
		case err != nil:
			return err
		}
		out = smtpConfigToAPI(saved)
		return h.audit(ctx, tx, auditEntry{
			action: "smtp_config.update", resourceType: "smtp_config", resourceID: saved.ID,
			appID: pr.appID, before: new(smtpConfigToAPI(old)), after: &out,
		})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSmtpConfig deletes one of the calling app's SMTP configs that no
// queue uses. The foreign key would otherwise set those queues' config to
// null, quietly moving their mail to the default server.
func (h *Handler) DeleteSmtpConfig(ctx context.Context, params oas.DeleteSmtpConfigParams) error {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return err
	}
	return h.store.Tx(ctx, func(tx *store.Store) error {
		// The lock makes a concurrent queue write naming this config finish
		// first, so the check below sees it.
		old, err := tx.SMTPConfigLock(ctx, pr.appID, params.SmtpConfigId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("SMTP config")
		}
		if err != nil {
			return err
		}
		names, err := tx.SMTPConfigQueueNames(ctx, pr.appID, old.ID)
		if err != nil {
			return err
		}
		if len(names) > 0 {
			return conflict("in_use", "SMTP config %q is used by queue(s) %s; point them at another config (or none) first",
				old.Name, strings.Join(names, ", "))
		}
		if err := tx.SMTPConfigDelete(ctx, pr.appID, old.ID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return notFound("SMTP config")
			}
			return err
		}
		return h.audit(ctx, tx, auditEntry{
			action: "smtp_config.delete", resourceType: "smtp_config", resourceID: old.ID,
			appID: pr.appID, before: new(smtpConfigToAPI(old)),
		})
	})
}

// TestSmtpConfig opens a real SMTP session with the config's settings —
// connect, TLS, AUTH, QUIT — and reports how far it got. A failed handshake
// is a successful test with ok=false: the report is the answer.
func (h *Handler) TestSmtpConfig(ctx context.Context, params oas.TestSmtpConfigParams) (*oas.SmtpTestResult, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	c, err := h.store.SMTPConfigGet(ctx, pr.appID, params.SmtpConfigId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("SMTP config")
	}
	if err != nil {
		return nil, err
	}
	srv, err := h.smtpServer(c)
	if err != nil {
		return nil, err
	}
	if !params.IdempotencyKey.IsSet() {
		// No transaction: a slow server must not hold a database connection.
		return probeSMTP(ctx, srv), nil
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "testSmtpConfig", smtpConfigRef{id: c.ID}, http.StatusOK,
		func(*store.Store) (*oas.SmtpTestResult, error) { return probeSMTP(ctx, srv), nil })
}

// probeSMTP runs mail.Probe and shapes its outcome as the API's report.
func probeSMTP(ctx context.Context, srv mail.Server) *oas.SmtpTestResult {
	start := time.Now()
	stage, err := mail.Probe(ctx, srv)
	out := &oas.SmtpTestResult{
		Ok: err == nil, Stage: oas.SmtpTestResultStage(stage),
		LatencyMs: float64(time.Since(start).Microseconds()) / 1000,
	}
	if err != nil {
		out.Message = err.Error()
		return out
	}
	out.Message = "connected to " + srv.Host
	if srv.TLS != mail.TLSNone {
		out.Message += ", negotiated TLS"
	}
	if srv.Username != "" {
		out.Message += ", authenticated as " + srv.Username
	}
	return out
}

// smtpServer is the server the config describes, password opened, as the
// sender would use it.
func (h *Handler) smtpServer(c *store.SMTPConfig) (mail.Server, error) {
	srv := mail.Server{
		Host: c.Host, Port: int(c.Port), PoolSize: int(c.PoolSize),
		Timeout:    time.Duration(c.TimeoutMS) * time.Millisecond,
		PublicOnly: !h.cfg.SMTPAllowPrivate,
	}
	switch c.Encryption {
	case "tls":
		srv.TLS = mail.TLSImplicit
	case "starttls":
		srv.TLS = mail.TLSStartTLS
	default:
		srv.TLS = mail.TLSNone
	}
	if c.Username != nil {
		srv.Username = *c.Username
	}
	if c.Password != nil {
		if h.box == nil || c.PasswordKeyID == nil {
			return mail.Server{}, errNoEncryption()
		}
		pw, err := h.box.Open(c.Password, *c.PasswordKeyID, store.SMTPPasswordContext(c.ID))
		if err != nil {
			return mail.Server{}, err
		}
		srv.Password = string(pw)
	}
	return srv, nil
}

// sealSMTPPassword encrypts password into c, bound to c's id.
func (h *Handler) sealSMTPPassword(c *store.SMTPConfig, password string) error {
	if h.box == nil {
		return errNoEncryption()
	}
	sealed, keyID := h.box.Seal([]byte(password), store.SMTPPasswordContext(c.ID))
	c.Password, c.PasswordKeyID = sealed, &keyID
	return nil
}

func errNoEncryption() *apiError {
	return newAPIError(http.StatusServiceUnavailable, "encryption_not_configured",
		"this server has no MQ_ENCRYPTION_KEY, so it cannot store or use SMTP passwords")
}

// validateSMTPConfig checks the values a create or update leaves in c,
// plus the new password if one is given; the schema has already bounded
// lengths and ranges, which are checked again so a spec edit cannot let
// bad values through to a database CHECK (a 500).
func validateSMTPConfig(c *store.SMTPConfig, password string, hasPassword, allowPrivate bool) error {
	switch {
	case strings.TrimSpace(c.Name) == "" || hasControl(c.Name) || len(c.Name) > 200:
		return invalid("name", "name must be 1–200 characters, not blank, without control characters")
	case !validSMTPHost(c.Host):
		return invalid("host", "host must be a hostname or an IP address, without scheme, port or spaces (at most 253 characters)")
	case !allowPrivate && !publicSMTPHost(c.Host):
		return invalid("host", "host %s is on a loopback, private or link-local network; this server sends only to public addresses (the operator can allow others with MQ_SMTP_ALLOW_PRIVATE=true)", c.Host)
	case c.Port < 1 || c.Port > 65535:
		return invalid("port", "port must be between 1 and 65535")
	case c.Username != nil && (*c.Username == "" || hasControl(*c.Username) || len(*c.Username) > 256):
		return invalid("username", "username must be 1–256 characters without control characters (use null or omit it for no authentication)")
	case hasPassword && (password == "" || strings.ContainsRune(password, 0) || len(password) > 1024):
		return invalid("password", "password must be 1–1024 characters without NUL (use null or omit it for none)")
	case hasPassword && c.Username == nil:
		return invalid("password", "a password needs a username: SMTP AUTH sends both")
	case c.PoolSize < 1 || c.PoolSize > 100:
		return invalid("pool_size", "pool_size must be between 1 and 100")
	case c.TimeoutMS < 100 || c.TimeoutMS > 300000:
		return invalid("timeout_ms", "timeout_ms must be between 100 and 300000")
	}
	switch c.Encryption {
	case "tls", "starttls", "none":
	default:
		return invalid("encryption", "encryption must be tls, starttls or none")
	}
	return nil
}

// validSMTPHost accepts an IP address or an RFC 1123 host name.
func validSMTPHost(host string) bool {
	if host == "" || len(host) > 253 {
		return false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Zone() == "" // a zone is local to this machine's interfaces
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

func smtpConfigToAPI(c *store.SMTPConfig) oas.SmtpConfig {
	out := oas.SmtpConfig{
		ID: c.ID, Name: c.Name, Host: c.Host, Port: int(c.Port), HasPassword: c.Password != nil,
		Encryption: oas.SmtpEncryption(c.Encryption), PoolSize: int(c.PoolSize), TimeoutMs: int(c.TimeoutMS),
		IsActive: c.IsActive, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
	if c.Username != nil {
		out.Username = oas.NewOptString(*c.Username)
	}
	return out
}

// passwordDigest stands in for a password in an Idempotency-Key
// fingerprint. The fingerprint is an unkeyed SHA-256 stored for a day; over
// the raw password it would let anyone reading the table test guesses, so
// the password is first put through an HMAC under a server secret.
func (h *Handler) passwordDigest(password string) string {
	m := hmac.New(sha256.New, h.cursors.key)
	m.Write([]byte("smtp password fingerprint\x00"))
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil))
}

// smtpCreateFingerprint is a create request as its Idempotency-Key
// fingerprint sees it: the password replaced by its digest.
type smtpCreateFingerprint struct {
	req      *oas.SmtpConfigCreate
	password string
}

// MarshalJSON encodes the request with the digest in place of the password.
func (f smtpCreateFingerprint) MarshalJSON() ([]byte, error) {
	c := *f.req
	if c.Password.IsSet() {
		c.Password = oas.NewOptString(f.password)
	}
	return c.MarshalJSON()
}

// smtpConfigRef is what a test request asks for, for the Idempotency-Key
// fingerprint: the config it names.
type smtpConfigRef struct{ id uuid.UUID }

// MarshalJSON encodes the path parameter, the whole of the request.
func (r smtpConfigRef) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"smtp_config_id": r.id.String()})
}

// publicSMTPHost refuses the hosts that are plainly not public: IP literals
// outside the public internet and localhost names. Other names are checked
// when dialled, on the address they resolve to (mail.Server.PublicOnly).
func publicSMTPHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return mail.IsPublic(a)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h != "localhost" && !strings.HasSuffix(h, ".localhost")
}
