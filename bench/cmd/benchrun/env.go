package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// machineInfo describes where the numbers were taken.
func machineInfo() [][2]string {
	var model string
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var mem string
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if strings.HasPrefix(line, "MemTotal:") {
				if kb, err := strconv.ParseFloat(strings.Fields(line)[1], 64); err == nil {
					mem = fmt.Sprintf("%.1f GiB", kb/1024/1024)
				}
			}
		}
	}
	kernel := strings.TrimSpace(cmdOutput("uname", "-srm"))
	load, _ := os.ReadFile("/proc/loadavg")
	return [][2]string{
		{"cores (nproc)", strconv.Itoa(runtime.NumCPU())},
		{"CPU", orNone(model)},
		{"memory", orNone(mem)},
		{"kernel", orNone(kernel)},
		{"load average at start (1/5/15 min)", orNone(strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))},
	}
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func cmdOutput(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func gitCommit() string {
	c := strings.TrimSpace(cmdOutput("git", "rev-parse", "--short", "HEAD"))
	if c == "" {
		return "unknown"
	}
	if err := exec.Command("git", "diff", "--quiet", "HEAD").Run(); err != nil {
		c += " (dirty: uncommitted changes)"
	}
	return c
}

func goVersion() string {
	if v := strings.TrimSpace(cmdOutput("go", "version")); v != "" {
		return v
	}
	return runtime.Version()
}

func redisVersion(ctx context.Context, addr string) string {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 3 * time.Second})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return "unavailable: " + err.Error()
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "unknown"
}

// benchDB is a database created for one run and dropped at the end.
type benchDB struct {
	adminURL string
	name     string
	url      string
}

func createDB(ctx context.Context, adminURL string) (*benchDB, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	name := fmt.Sprintf("mq_bench_%s_%d", time.Now().UTC().Format("20060102_150405"), os.Getpid())
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u.Path = "/" + name
	return &benchDB{adminURL: adminURL, name: name, url: u.String()}, nil
}

func (d *benchDB) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, d.adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)")
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// service is one running bin/mailqueue child process.
type service struct {
	role    string
	cmd     *exec.Cmd
	httpURL string
	started time.Time
	logPath string

	peakRSS atomic.Int64
	stopRSS chan struct{}
	rssDone sync.WaitGroup
	exited  chan struct{}
	waitErr error
}

// startService runs `bin role` with env (MQ_* only; the parent's MQ_*
// settings are not inherited) and samples its RSS every 100 ms.
func startService(bin, role string, env map[string]string, logDir string) (*service, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	inboundAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, role)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MQ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "MQ_HTTP_ADDR="+httpAddr, "MQ_INBOUND_ADDR="+inboundAddr)
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", role, time.Now().UnixNano()))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	s := &service{role: role, cmd: cmd, httpURL: "http://" + httpAddr, logPath: logPath,
		stopRSS: make(chan struct{}), exited: make(chan struct{})}
	s.started = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s %s: %w", bin, role, err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	s.rssDone.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := s.RSS(); rss > s.peakRSS.Load() {
				s.peakRSS.Store(rss)
			}
			select {
			case <-t.C:
			case <-s.stopRSS:
				return
			case <-s.exited:
				return
			}
		}
	})
	return s, nil
}

// RSS is the process's resident set (VmRSS) in bytes, 0 once it exited.
func (s *service) RSS() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// CPU is the CPU time the process's threads have run so far (from
// /proc/<pid>/task/*/schedstat; 0 where that cannot be read).
func (s *service) CPU() time.Duration { return pidCPU(s.cmd.Process.Pid) }

// schedstat reads the run time (ns) from a /proc schedstat file.
func schedstat(path string) time.Duration {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns)
}

// ResetPeak starts a new peak-RSS window and returns the previous peak.
func (s *service) ResetPeak() int64 { return s.peakRSS.Swap(s.RSS()) }

// Peak is the highest RSS seen in the current window.
func (s *service) Peak() int64 { return max(s.peakRSS.Load(), s.RSS()) }

// Exited reports whether the process ended, with its log tail.
func (s *service) Exited() error {
	select {
	case <-s.exited:
		return fmt.Errorf("mailqueue %s exited (%v); log tail:\n%s", s.role, s.waitErr, s.logTail())
	default:
		return nil
	}
}

func (s *service) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// Stop sends SIGTERM and waits (SIGKILL after 30 s).
func (s *service) Stop() error {
	close(s.stopRSS)
	s.rssDone.Wait()
	select {
	case <-s.exited:
		return nil
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("mailqueue %s did not stop within 30s of SIGTERM; killed", s.role)
	}
	var exit *exec.ExitError
	if s.waitErr != nil && !errors.As(s.waitErr, &exit) {
		return s.waitErr
	}
	return nil
}

// runOnce runs `bin args...` to completion (e.g. migrate).
func runOnce(ctx context.Context, bin string, env map[string]string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MQ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out.String())
	}
	return nil
}

func mib(b int64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
