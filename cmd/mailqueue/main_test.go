package main_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/testenv"
)

// These tests build the real binary once and drive it over HTTP with the
// client generated from openapi.yaml, against real PostgreSQL, Redis and
// SMTP servers.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailqueue-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mailqueue")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building mailqueue:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const adminSecret = "e2e-admin-secret-0123456789"

// env is one deployment: a database, and the settings every process of it
// shares.
type env struct {
	t       *testing.T
	dbURL   string
	smtpURL string
	vars    map[string]string
}

func newEnv(t *testing.T, smtpAddr string) *env {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	return &env{t: t, dbURL: testenv.DatabaseURL(t), smtpURL: "smtp://" + smtpAddr, vars: map[string]string{
		"MQ_REDIS_ADDRS":      testenv.RedisAddr(t),
		"MQ_ADMIN_SECRET":     adminSecret,
		"MQ_ENCRYPTION_KEY":   base64.StdEncoding.EncodeToString(key),
		"MQ_LOG_FORMAT":       "text",
		"MQ_LOG_LEVEL":        "info",
		"MQ_SHUTDOWN_TIMEOUT": "20s",
	}}
}

// proc is one running mailqueue process.
type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncBuffer
	done chan error
}

func (e *env) start(command string) *proc {
	t := e.t
	t.Helper()
	httpAddr, inboundAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(binary, command)
	cmd.Env = append(os.Environ(),
		"MQ_DATABASE_URL="+e.dbURL, "MQ_DEFAULT_SMTP_URL="+e.smtpURL,
		"MQ_HTTP_ADDR="+httpAddr, "MQ_INBOUND_ADDR="+inboundAddr)
	for k, v := range e.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, url: "http://" + httpAddr, logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mailqueue %s: %v", command, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("mailqueue %s output:\n%s", command, p.logs.String())
		}
	})
	if command == "serve" || command == "all" {
		p.waitHealthy(t)
	}
	return p
}

func (p *proc) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.url + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.done:
			t.Fatalf("mailqueue exited early (%v):\n%s", err, p.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("mailqueue did not become healthy:\n%s", p.logs.String())
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // let Cleanup's receive return
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatalf("waiting for mailqueue: %v", err)
		}
		return 0
	case <-time.After(within):
		t.Fatalf("mailqueue did not exit within %s:\n%s", within, p.logs.String())
		return -1
	}
}

// security hands the generated client an admin secret and an API key.
type security struct{ key string }

func (s security) AdminSecret(context.Context, oas.OperationName) (oas.AdminSecret, error) {
	return oas.AdminSecret{Token: adminSecret}, nil
}

func (s security) ApiKey(context.Context, oas.OperationName) (oas.ApiKey, error) {
	return oas.ApiKey{Token: s.key}, nil
}

// newApp creates an app through the API and returns a client acting as it.
func newApp(t *testing.T, baseURL string) *oas.Client {
	c, _ := newAppKey(t, baseURL)
	return c
}

// newAppKey is newApp that also returns the app's API key.
func newAppKey(t *testing.T, baseURL string) (*oas.Client, string) {
	t.Helper()
	admin, err := oas.NewClient(baseURL, security{})
	if err != nil {
		t.Fatal(err)
	}
	created, err := admin.CreateApp(context.Background(), &oas.AppCreate{Name: "E2E " + t.Name()}, oas.CreateAppParams{})
	if err != nil {
		t.Fatalf("creating app: %v", err)
	}
	c, err := oas.NewClient(baseURL, security{key: created.APIKey.Key})
	if err != nil {
		t.Fatal(err)
	}
	return c, created.APIKey.Key
}

func emailTo(to, subject string) *oas.EmailRequest {
	return &oas.EmailRequest{
		From:    oas.Address{Email: "sender@example.com", Name: oas.NewOptString("Sender")},
		To:      []oas.Address{{Email: to}},
		Subject: subject,
		Text:    oas.NewOptString("Hello from the end-to-end test."),
		HTML:    oas.NewOptString("<p>Hello from the <b>end-to-end</b> test.</p>"),
	}
}

// waitStatus polls an email until it reaches status, failing on timeout.
func waitStatus(t *testing.T, c *oas.Client, id uuid.UUID, status oas.EmailStatus, within time.Duration) *oas.Email {
	t.Helper()
	deadline := time.Now().Add(within)
	var last *oas.Email
	for time.Now().Before(deadline) {
		e, err := c.GetEmail(context.Background(), oas.GetEmailParams{EmailId: id})
		if err != nil {
			t.Fatalf("getting email %s: %v", id, err)
		}
		if e.Status == status {
			return e
		}
		last = e
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("email %s is %s, not %s, after %s (last_error %q)", id, last.Status, status, within, last.LastError.Or(""))
	return nil
}

func startSink(t *testing.T, opts smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	opts.Record = true
	return testenv.SMTPSink(t, opts)
}

// TestSendEndToEnd accepts an email through the API of `mailqueue all` and
// follows it to the SMTP server: status, events and the message itself.
func TestSendEndToEnd(t *testing.T) {
	t.Parallel()
	sink := startSink(t, smtpsink.Options{})
	e := newEnv(t, sink.Addr())
	p := e.start("all")
	c := newApp(t, p.url)
	ctx := context.Background()

	q, err := c.CreateQueue(ctx, &oas.QueueCreate{Name: "transactional", Priority: oas.NewOptInt(8)}, oas.CreateQueueParams{})
	if err != nil {
		t.Fatalf("creating queue: %v", err)
	}
	req := emailTo("user@example.com", "Welcome")
	req.Queue = oas.NewOptString(q.Name)
	req.Headers = oas.NewOptHeaders(oas.Headers{"X-Campaign": "onboarding"})
	accepted, err := c.CreateEmail(ctx, req, oas.CreateEmailParams{})
	if err != nil {
		t.Fatalf("sending email: %v", err)
	}
	if accepted.Status != oas.EmailStatusQueued || accepted.Queue != "transactional" {
		t.Fatalf("accepted = %+v", accepted)
	}
	sent := waitStatus(t, c, accepted.ID, oas.EmailStatusSent, 15*time.Second)
	if !sent.SentAt.Set {
		t.Error("sent email has no sent_at")
	}

	events, err := c.ListEmailEvents(ctx, oas.ListEmailEventsParams{EmailId: accepted.ID})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range events.Data {
		types = append(types, string(ev.Type))
	}
	if got := strings.Join(types, ","); got != "queued,sent" {
		t.Errorf("events = %s, want queued,sent", got)
	}

	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want 1", len(msgs))
	}
	data := string(msgs[0].Data)
	for _, want := range []string{"Message-ID: <" + accepted.MessageID + ">", "Subject: Welcome", "X-Campaign: onboarding", "multipart/alternative"} {
		if !strings.Contains(data, want) {
			t.Errorf("message lacks %q:\n%s", want, data)
		}
	}
	if got := msgs[0].To; len(got) != 1 || got[0] != "user@example.com" {
		t.Errorf("envelope recipients = %v", got)
	}
}

// TestSendThroughMailpit delivers to Mailpit, the dev inbox `make run` uses,
// and finds the message through Mailpit's API.
func TestSendThroughMailpit(t *testing.T) {
	t.Parallel()
	smtpAddr := os.Getenv("MQ_TEST_MAILPIT_SMTP")
	apiURL := os.Getenv("MQ_TEST_MAILPIT_URL")
	if smtpAddr == "" {
		smtpAddr = "127.0.0.1:1025"
	}
	if apiURL == "" {
		apiURL = "http://127.0.0.1:8025"
	}
	if conn, err := net.DialTimeout("tcp", smtpAddr, time.Second); err != nil {
		t.Fatalf("Mailpit is not running at %s (start it with `make up`): %v", smtpAddr, err)
	} else {
		conn.Close()
	}
	e := newEnv(t, smtpAddr)
	p := e.start("all")
	c := newApp(t, p.url)
	subject := "mailpit-" + uuid.NewString()
	accepted, err := c.CreateEmail(context.Background(), emailTo("inbox@example.com", subject), oas.CreateEmailParams{})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, accepted.ID, oas.EmailStatusSent, 15*time.Second)

	resp, err := http.Get(apiURL + "/api/v1/search?query=" + url.QueryEscape("subject:"+subject))
	if err != nil {
		t.Fatalf("asking Mailpit: %v", err)
	}
	defer resp.Body.Close()
	var found struct {
		Messages []struct {
			MessageID string `json:"MessageID"`
			Subject   string `json:"Subject"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&found); err != nil {
		t.Fatal(err)
	}
	if len(found.Messages) != 1 || found.Messages[0].MessageID != accepted.MessageID {
		t.Fatalf("Mailpit has %+v, want one message with Message-ID %s", found.Messages, accepted.MessageID)
	}
}

// TestAcceptedEmailSurvivesSIGKILL is the durability promise: an email
// answered 202 is delivered even if the process dies the instant after,
// because its row and its job were committed in one transaction.
func TestAcceptedEmailSurvivesSIGKILL(t *testing.T) {
	t.Parallel()
	sink := startSink(t, smtpsink.Options{})
	e := newEnv(t, sink.Addr())

	// An API-only process accepts; nothing in it can send.
	api := e.start("serve")
	c := newApp(t, api.url)
	const n = 40
	ids := map[string]uuid.UUID{}
	for i := range n {
		a, err := c.CreateEmail(context.Background(), emailTo(fmt.Sprintf("user%d@example.com", i), fmt.Sprintf("durable %d", i)), oas.CreateEmailParams{})
		if err != nil {
			t.Fatalf("email %d: %v", i, err)
		}
		ids[a.MessageID] = a.ID
	}
	if err := api.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	api.wait(t, 5*time.Second)

	// A new process picks the jobs up from PostgreSQL.
	e.start("work")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sink.WaitForMessages(ctx, n); err != nil {
		t.Fatalf("only %d of %d emails delivered after restart: %v", sink.Stats().Messages, n, err)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	seen := map[string]int{}
	for _, m := range sink.Messages() {
		seen[messageID(m.Data)]++
	}
	for mid := range ids {
		if seen[mid] != 1 {
			t.Errorf("message %s delivered %d times, want exactly once", mid, seen[mid])
		}
	}
	if len(seen) != n {
		t.Errorf("sink saw %d distinct messages, want %d", len(seen), n)
	}
}

// TestSIGTERMFinishesInFlightSends stops a process while the SMTP server is
// still answering: the sends under way complete and are recorded before the
// process exits cleanly.
func TestSIGTERMFinishesInFlightSends(t *testing.T) {
	t.Parallel()
	sink := startSink(t, smtpsink.Options{Delay: 1500 * time.Millisecond})
	e := newEnv(t, sink.Addr())
	p := e.start("all")
	c, key := newAppKey(t, p.url)
	const n = 3
	var ids []uuid.UUID
	for i := range n {
		a, err := c.CreateEmail(context.Background(), emailTo(fmt.Sprintf("slow%d@example.com", i), "slow"), oas.CreateEmailParams{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	for _, id := range ids {
		waitStatus(t, c, id, oas.EmailStatusProcessing, 10*time.Second)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, p.logs.String())
	}
	if got := sink.Stats().Messages; got != n {
		t.Fatalf("sink got %d messages, want %d", got, n)
	}
	// The statuses were written before exit: read them through a new process.
	reader := e.start("serve")
	c2, err := oas.NewClient(reader.url, security{key: key})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitStatus(t, c2, id, oas.EmailStatusSent, 5*time.Second)
	}
}

// TestConfigErrors checks bad settings stop the binary at once, saying
// which variable is wrong.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	dbURL := testenv.DatabaseURL(t)
	empty := testenv.EmptyDatabaseURL(t)
	key := "MQ_ENCRYPTION_KEY=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	cases := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantErr  string
	}{
		{"no command", nil, nil, 2, "Usage"},
		{"unknown command", []string{"launch"}, nil, 2, `unknown command "launch"`},
		{"bad encryption key", []string{"serve"}, []string{"MQ_ENCRYPTION_KEY=short", "MQ_ADMIN_SECRET=" + adminSecret}, 2, "MQ_ENCRYPTION_KEY"},
		{"missing admin secret", []string{"serve"}, []string{key}, 2, "MQ_ADMIN_SECRET"},
		{"worker without encryption key", []string{"work"}, nil, 2, "MQ_ENCRYPTION_KEY"},
		{"bad smtp url", []string{"work"}, []string{"MQ_DEFAULT_SMTP_URL=http://x"}, 2, "MQ_DEFAULT_SMTP_URL"},
		{"bad http addr", []string{"work"}, []string{"MQ_HTTP_ADDR=nonsense"}, 2, "MQ_HTTP_ADDR"},
		{"database unreachable", []string{"work"}, []string{key, "MQ_DATABASE_URL=postgres://postgres@127.0.0.1:1/none?connect_timeout=2"}, 1, "connecting to PostgreSQL"},
		{"not migrated", []string{"work"}, []string{key, "MQ_DATABASE_URL=" + empty}, 1, "mailqueue migrate"},
		{"version", []string{"version"}, nil, 0, "dev"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = append(cleanEnv(), "MQ_DATABASE_URL="+dbURL)
			cmd.Env = append(cmd.Env, tc.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			}
			if code != tc.wantCode || !strings.Contains(string(out), tc.wantErr) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d mentioning %q", code, out, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestMigrateIsIdempotent runs `mailqueue migrate` twice on an empty database.
func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	dbURL := testenv.EmptyDatabaseURL(t)
	for i := range 2 {
		cmd := exec.Command(binary, "migrate")
		cmd.Env = append(cleanEnv(), "MQ_DATABASE_URL="+dbURL, "MQ_LOG_FORMAT=text")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("migrate run %d: %v\n%s", i+1, err, out)
		}
	}
}

// cleanEnv is the test's environment without any MQ_ settings, so a
// developer's shell cannot change what a case sees.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MQ_") {
			out = append(out, kv)
		}
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func messageID(data []byte) string {
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r"), []byte("Message-ID: ")); ok {
			return strings.Trim(string(v), "<>")
		}
	}
	return ""
}

// syncBuffer collects a process's output from two pipes at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// TestSandboxNeverOpensSMTP sends with a sandbox app's mq_test_ key: the
// email goes through the whole pipeline to "sent", and the SMTP server is
// never even connected to.
func TestSandboxNeverOpensSMTP(t *testing.T) {
	t.Parallel()
	sink := startSink(t, smtpsink.Options{})
	e := newEnv(t, sink.Addr())
	p := e.start("all")
	admin, err := oas.NewClient(p.url, security{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	created, err := admin.CreateApp(ctx, &oas.AppCreate{Name: "Sandbox", SandboxMode: oas.NewOptBool(true)}, oas.CreateAppParams{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.APIKey.Key, "mq_test_") {
		t.Fatalf("sandbox app key %q does not start with mq_test_", created.APIKey.Key)
	}
	c, err := oas.NewClient(p.url, security{key: created.APIKey.Key})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.CreateEmail(ctx, emailTo("someone@example.com", "sandboxed"), oas.CreateEmailParams{})
	if err != nil {
		t.Fatal(err)
	}
	// The simulator takes a sandbox email through sent to delivered.
	waitStatus(t, c, a.ID, oas.EmailStatusDelivered, 15*time.Second)
	events, err := c.ListEmailEvents(ctx, oas.ListEmailEventsParams{EmailId: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	last := events.Data[len(events.Data)-1]
	if last.Type != oas.EmailEventTypeDelivered || string(last.Data.Value["sandbox"]) != "true" {
		t.Errorf("last event = %s %v, want delivered with sandbox=true", last.Type, last.Data.Value)
	}
	if st := sink.Stats(); st.Connections != 0 || st.Messages != 0 {
		t.Fatalf("sandbox email reached the SMTP server: %+v", st)
	}
}
