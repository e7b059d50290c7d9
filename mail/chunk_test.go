package mail

import (
	"bufio"
	"bytes"
	"net/textproto"
	"testing"
)

// dataRoundTrip is what a server receives through DATA: raw as the
// client's DotWriter puts it on the wire, with the final "." line and the
// dot-stuffing taken off again (RFC 5321, 4.5.2), CRLFs kept.
func dataRoundTrip(t *testing.T, raw []byte) []byte {
	t.Helper()
	var wire bytes.Buffer
	bw := bufio.NewWriter(&wire)
	dw := textproto.NewWriter(bw).DotWriter()
	if _, err := dw.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	body, ok := bytes.CutSuffix(wire.Bytes(), []byte(".\r\n"))
	if !ok {
		t.Fatalf("DATA wire %q lacks the final dot", wire.Bytes())
	}
	lines := bytes.SplitAfter(body, []byte("\r\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimPrefix(l, []byte("."))
	}
	return bytes.Join(lines, nil)
}

// A BDAT chunk must carry exactly the bytes DATA would have delivered.
func TestChunkMatchesData(t *testing.T) {
	t.Parallel()
	msg, err := Build(&Message{
		MessageID: "chunk@mailqueue.test",
		From:      Address{Email: "from@example.org"},
		To:        []Address{{Email: "to@example.org"}},
		Subject:   "dots and line ends",
		Text:      "first\n.starts with a dot\r\n..two dots\nlast without end",
		HTML:      "<p>bare\nLF</p>\n.",
	})
	if err != nil {
		t.Fatal(err)
	}
	var built bytes.Buffer
	if _, err := msg.WriteTo(&built); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"built message":    built.Bytes(),
		"bare LFs":         []byte("a: b\n\nline\n.dot\nend\n"),
		"no final newline": []byte("a: b\r\n\r\nbody"),
		"lone LF first":    []byte("\nx\r\n"),
		"CRLF only":        []byte("a: b\r\n\r\nbody\r\n"),
	}
	for name, raw := range cases {
		b := bytes.NewBuffer(append([]byte(nil), raw...))
		normalizeChunk(b)
		if want := dataRoundTrip(t, raw); !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s: chunk\n%q\nwant what DATA delivers\n%q", name, b.Bytes(), want)
		}
	}
}
