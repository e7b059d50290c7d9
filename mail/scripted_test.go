package mail

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// scripted is an SMTP server offering PIPELINING and CHUNKING whose replies
// to MAIL, RCPT and BDAT the test chooses per transaction, for the server
// behaviours that go-smtp and Mailpit never show. It records every command,
// and for each MAIL whether the BDAT of that transaction had already arrived
// with it.
type scripted struct {
	mail, rcpt, bdat func(tx int) string
	// sticky keeps a transaction open after a refused BDAT until RSET, as
	// RFC 3030 allows; the next MAIL is then refused with 503.
	sticky bool

	mu       sync.Mutex
	commands []string
	bodyWith []bool // per MAIL: the BDAT was already buffered
}

func (s *scripted) serve(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(l string) { w.WriteString(l + "\r\n"); w.Flush() }
	reply("220 scripted")
	tx, open := 0, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.commands = append(s.commands, strings.Fields(line)[0])
		s.mu.Unlock()
		switch cmd := strings.ToUpper(strings.Fields(line)[0]); cmd {
		case "EHLO":
			reply("250-scripted\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 CHUNKING")
		case "MAIL":
			tx++
			ahead, _ := r.Peek(r.Buffered())
			s.mu.Lock()
			s.bodyWith = append(s.bodyWith, strings.Contains(string(ahead), "BDAT"))
			s.mu.Unlock()
			if open {
				reply("503 5.5.1 nested MAIL")
				continue
			}
			rp := s.mail(tx)
			open = rp[0] == '2'
			reply(rp)
		case "RCPT":
			reply(s.rcpt(tx))
		case "BDAT":
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			_, _ = io.CopyN(io.Discard, r, int64(n))
			rp := s.bdat(tx)
			open = open && rp[0] != '2' && s.sticky
			reply(rp)
		case "RSET":
			open = false
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 unknown command")
		}
	}
}

func (s *scripted) start(t *testing.T) Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	return Server{Host: host, Port: p, TLS: TLSNone, Timeout: 2 * time.Second, PoolSize: 1, HeloName: "client.example"}
}

func (s *scripted) log() (commands []string, bodyWith []bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commands), slices.Clone(s.bodyWith)
}

func ok(int) string { return "250 ok" }

func scriptedMessage(n int) *Message {
	return &Message{MessageID: fmt.Sprintf("%d@example.com", n), From: Address{Email: "from@example.com"},
		To: []Address{{Email: "to@example.com"}}, Subject: "s", Text: "hello"}
}

// A reused session carries the message with its envelope when it was used
// moments ago, even after the deadline of its last transaction has passed;
// after a longer pause the body waits for the envelope's replies.
func TestBodyWithEnvelopeOnReuse(t *testing.T) {
	t.Parallel()
	s := &scripted{mail: ok, rcpt: ok, bdat: ok}
	srv := s.start(t)
	srv.Timeout = 300 * time.Millisecond
	srv.IdleTimeout = time.Minute
	p := NewPool(srv, nil)
	defer p.Close()
	for i, pause := range []time.Duration{0, 50 * time.Millisecond, 500 * time.Millisecond, bodyWithEnvelopeIdle + 200*time.Millisecond} {
		time.Sleep(pause)
		if err := p.Send(t.Context(), scriptedMessage(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if _, bodyWith := s.log(); !slices.Equal(bodyWith, []bool{true, true, true, false}) {
		t.Errorf("body sent with the envelope = %v, want it on the first three sends only", bodyWith)
	}
	if d := p.Stats().Dials; d != 1 {
		t.Errorf("%d dials, want one session for every send", d)
	}
}

// A refused final reply is followed by RSET, so a server that keeps the
// transaction open does not refuse the next message.
func TestRefusedChunkResets(t *testing.T) {
	t.Parallel()
	s := &scripted{mail: ok, rcpt: ok, sticky: true, bdat: func(tx int) string {
		if tx == 1 {
			return "554 5.6.0 content rejected"
		}
		return "250 queued"
	}}
	p := NewPool(s.start(t), nil)
	defer p.Close()
	if err := p.Send(t.Context(), scriptedMessage(1)); !IsPermanent(err) {
		t.Fatalf("first send: %v, want the permanent refusal", err)
	}
	if err := p.Send(t.Context(), scriptedMessage(2)); err != nil {
		t.Fatalf("second send: %v", err)
	}
	if commands, _ := s.log(); !slices.Contains(commands, "RSET") {
		t.Errorf("commands %v: no RSET after the refused chunk", commands)
	}
}

// A server that accepts the message after refusing its recipient is out of
// step: the send is uncertain, never a failure to retry, and the session is
// not used again.
func TestChunkAcceptedAfterRefusal(t *testing.T) {
	t.Parallel()
	s := &scripted{mail: ok, rcpt: func(int) string { return "450 4.2.0 busy" }, bdat: func(int) string { return "250 queued" }}
	p := NewPool(s.start(t), nil)
	defer p.Close()
	err := p.Send(t.Context(), scriptedMessage(1))
	if !IsUncertain(err) || IsPermanent(err) {
		t.Fatalf("send: %v, want uncertain and not permanent", err)
	}
	if st := p.Stats(); st.Open != 0 {
		t.Errorf("%d sessions still open, want the out-of-step one closed", st.Open)
	}
}
