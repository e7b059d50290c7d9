// Package load drives the Mail Queue HTTP API for benchmarks: it builds
// request bodies, runs open-model (fixed arrival rate) and closed-model
// (fixed concurrency) load, and summarizes latencies exactly.
package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client is a Mail Queue API client tuned for load: one keep-alive
// transport whose idle pool holds as many connections as there are workers.
type Client struct {
	BaseURL string
	Key     string
	HTTP    *http.Client
}

// NewClient returns a client for baseURL (e.g. http://127.0.0.1:8080)
// keeping up to conns connections alive.
func NewClient(baseURL, key string, conns int, timeout time.Duration) *Client {
	conns = max(conns, 1)
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"),
		Key:     key,
		HTTP:    &http.Client{Transport: tr, Timeout: timeout},
	}
}

// Close drops idle connections.
func (c *Client) Close() { c.HTTP.CloseIdleConnections() }

// Do sends one request with the API key (or token, when not empty) and
// returns the status and the whole response body.
func (c *Client) Do(ctx context.Context, method, path string, body []byte, token string) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, r)
	if err != nil {
		return 0, nil, err
	}
	if token == "" {
		token = c.Key
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// App is what CreateApp returns.
type App struct {
	ID  string
	Key string
}

// CreateApp creates an app with the admin secret and returns its id and
// first (admin-scoped) API key; it also sets c.Key.
func (c *Client) CreateApp(ctx context.Context, adminSecret, name string) (App, error) {
	body, _ := json.Marshal(map[string]any{"name": name})
	status, data, err := c.Do(ctx, http.MethodPost, "/v1/apps", body, adminSecret)
	if err != nil {
		return App{}, fmt.Errorf("POST /v1/apps: %w", err)
	}
	if status != http.StatusCreated {
		return App{}, fmt.Errorf("POST /v1/apps: status %d: %s", status, Truncate(data, 300))
	}
	var out struct {
		App struct {
			ID string `json:"id"`
		} `json:"app"`
		APIKey struct {
			Key string `json:"key"`
		} `json:"api_key"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.APIKey.Key == "" {
		return App{}, fmt.Errorf("POST /v1/apps: unexpected answer: %s", Truncate(data, 300))
	}
	c.Key = out.APIKey.Key
	return App{ID: out.App.ID, Key: out.APIKey.Key}, nil
}

// EnsureQueue creates the named queue unless it is "default" or exists
// already (409).
func (c *Client) EnsureQueue(ctx context.Context, name string, priority int) error {
	if name == "" || name == "default" {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"name": name, "priority": priority})
	status, data, err := c.Do(ctx, http.MethodPost, "/v1/queues", body, "")
	if err != nil {
		return fmt.Errorf("POST /v1/queues: %w", err)
	}
	if status != http.StatusCreated && status != http.StatusConflict {
		return fmt.Errorf("POST /v1/queues %q: status %d: %s", name, status, Truncate(data, 300))
	}
	return nil
}

// WaitHealthy polls GET /v1/health until it answers 200 or ctx ends.
func (c *Client) WaitHealthy(ctx context.Context) error {
	for {
		status, _, err := c.Do(ctx, http.MethodGet, "/v1/health", nil, "")
		if err == nil && status == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s/v1/health (last status %d, error %v): %w", c.BaseURL, status, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Truncate returns data as a string of at most n bytes, marking the cut.
func Truncate(data []byte, n int) string {
	s := strings.TrimSpace(string(data))
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ErrorMessage extracts error.message (and code) from an API error body,
// or the truncated body when it is not one.
func ErrorMessage(data []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		return e.Error.Code + ": " + e.Error.Message
	}
	return Truncate(data, 200)
}
