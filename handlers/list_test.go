package handlers_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
)

func TestListEmailsPagination(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	_, other := b.createApp(t, "other", false)
	b.send(t, other, emailReq(nil))

	var sent []uuid.UUID
	for range 7 {
		sent = append(sent, b.send(t, key, emailReq(nil)).ID)
	}
	slices.Reverse(sent) // newest first

	var got []uuid.UUID
	cursor := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"3"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		resp, body := b.do(t, http.MethodGet, "/v1/emails?"+q.Encode(), key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		l := decode[emailList](t, body)
		for _, e := range l.Data {
			got = append(got, e.ID)
			if e.HTML != nil || e.Text != nil {
				t.Errorf("list item %s carries bodies", e.ID)
			}
		}
		wantMore := page < 2
		if l.HasMore != wantMore || (l.Cursor != nil) != wantMore {
			t.Errorf("page %d: has_more=%v cursor=%v, want has_more=%v", page, l.HasMore, l.Cursor, wantMore)
		}
		if want := []int{3, 3, 1}[min(page, 2)]; len(l.Data) != want {
			t.Errorf("page %d has %d items, want %d", page, len(l.Data), want)
		}
		if !l.HasMore || l.Cursor == nil {
			break
		}
		cursor = *l.Cursor
	}
	if !slices.Equal(got, sent) {
		t.Errorf("paged ids\n%v\nwant newest first\n%v", got, sent)
	}

	// A cursor is tamper-proof.
	first := decode[emailList](t, must(b.do(t, http.MethodGet, "/v1/emails?limit=3", key, nil, nil)))
	c := []byte(*first.Cursor)
	if c[0] == 'A' {
		c[0] = 'B'
	} else {
		c[0] = 'A'
	}
	for _, bad := range []string{string(c), "garbage", "a.b", *first.Cursor + "x"} {
		resp, body := b.do(t, http.MethodGet, "/v1/emails?cursor="+url.QueryEscape(bad), key, nil, nil)
		expectError(t, resp, body, http.StatusBadRequest, "invalid_cursor", "cursor")
	}

	for _, q := range []string{"limit=101", "limit=0", "limit=-1", "limit=x", "status=bogus", "since=yesterday", "batch_id=nope"} {
		resp, body := b.do(t, http.MethodGet, "/v1/emails?"+q, key, nil, nil)
		expectError(t, resp, body, http.StatusBadRequest, "", "")
	}
	resp, body := b.do(t, http.MethodGet, "/v1/emails?limit=100", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if n := len(decode[emailList](t, body).Data); n != 7 {
		t.Errorf("limit=100 lists %d, want 7", n)
	}
}

func must(_ *http.Response, body []byte) []byte { return body }

func TestListEmailsFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	resp, body := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "newsletter"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)

	inDefault := b.send(t, key, emailReq(nil)).ID
	inNews := b.send(t, key, emailReq(func(m map[string]any) { m["queue"] = "newsletter" })).ID
	cancelled := b.send(t, key, emailReq(nil)).ID
	b.exec(t, "UPDATE emails SET status = 'cancelled' WHERE id = $1", cancelled)

	ids := func(query string) []uuid.UUID {
		t.Helper()
		resp, body := b.do(t, http.MethodGet, "/v1/emails"+query, key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		var out []uuid.UUID
		for _, e := range decode[emailList](t, body).Data {
			out = append(out, e.ID)
		}
		return out
	}
	for query, want := range map[string][]uuid.UUID{
		"":                                 {cancelled, inNews, inDefault},
		"?queue=newsletter":                {inNews},
		"?queue=default":                   {cancelled, inDefault},
		"?queue=nope":                      nil,
		"?status=queued":                   {inNews, inDefault},
		"?status=cancelled":                {cancelled},
		"?status=sent":                     nil,
		"?status=queued&queue=default":     {inDefault},
		"?since=2000-01-01T00:00:00Z":      {cancelled, inNews, inDefault},
		"?since=2999-01-01T00:00:00Z":      nil,
		"?batch_id=" + uuid.NewString():    nil,
		"?status=queued&queue=newsletter&": {inNews},
	} {
		if got := ids(query); !slices.Equal(got, want) {
			t.Errorf("list%s = %v, want %v", query, got, want)
		}
	}

	// The generated client reads the same list.
	l, err := b.oasClient(t, key).ListEmails(t.Context(), oas.ListEmailsParams{
		Status: oas.NewOptEmailStatus(oas.EmailStatusQueued), Limit: oas.NewOptInt(1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Data) != 1 || l.Data[0].ID != inNews || !l.HasMore || !l.Cursor.Set {
		t.Errorf("typed list = %+v", l)
	}
}
