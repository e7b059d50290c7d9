package handlers

import (
	"context"
	"errors"
	netmail "net/mail"
	"regexp"
	"strings"
	"sync"

	"github.com/microcosm-cc/bluemonday"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// GetEmailPreview shows an email as its recipients get it: the subject and
// bodies were personalized when it was accepted and are stored that way;
// the HTML is sanitised for viewing in a browser, and the headers are the
// ones the send worker writes (Date aside, which is set when it is sent).
func (h *Handler) GetEmailPreview(ctx context.Context, params oas.GetEmailPreviewParams) (*oas.EmailPreview, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	e, err := h.store.EmailGet(ctx, pr.appID, params.EmailId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("email")
	}
	if err != nil {
		return nil, err
	}
	out := &oas.EmailPreview{
		Subject: e.Subject, From: oas.Address{Email: e.FromAddress}, To: addressesToAPI(e.To),
		Headers: previewHeaders(e),
	}
	if e.FromName != nil {
		out.From.Name = oas.NewOptString(*e.FromName)
	}
	if e.HTML != nil {
		out.HTML = oas.NewOptString(sanitizeHTML(*e.HTML))
	}
	if e.Text != nil {
		out.Text = oas.NewOptString(*e.Text)
	}
	return out, nil
}

// previewHeaders are the header fields the send worker generates for e
// (mail.Build): Message-ID, From, To, Cc, Reply-To, Subject and the
// custom headers. Bcc is never written into a message.
func previewHeaders(e *store.Email) oas.Headers {
	h := oas.Headers{}
	for name, value := range e.Headers {
		if !reservedHeaders[strings.ToLower(name)] {
			h[name] = value
		}
	}
	h["Message-ID"] = "<" + e.MessageID + ">"
	from := netmail.Address{Address: e.FromAddress}
	if e.FromName != nil {
		from.Name = *e.FromName
	}
	h["From"] = from.String()
	if v := addressList(e.To); v != "" {
		h["To"] = v
	}
	if v := addressList(e.Cc); v != "" {
		h["Cc"] = v
	}
	if e.ReplyTo != nil {
		h["Reply-To"] = *e.ReplyTo
	}
	h["Subject"] = e.Subject
	return h
}

func addressList(list []store.Address) string {
	parts := make([]string, len(list))
	for i, a := range list {
		parts[i] = (&netmail.Address{Name: a.Name, Address: a.Email}).String()
	}
	return strings.Join(parts, ", ")
}

// sanitizeHTML makes an email's HTML safe to show in the dashboard: no
// scripts, no event handlers, no javascript: or other non-web URLs, and no
// remote content, so opening a preview fires no tracking pixel and loads
// nothing from elsewhere. Images keep their alt text; only inline images
// (cid: and data:) keep their source. Styles are kept for a fixed list of
// layout properties, none of which can hold a url().
func sanitizeHTML(s string) string {
	return previewPolicy().Sanitize(s)
}

var previewPolicy = sync.OnceValue(func() *bluemonday.Policy {
	p := bluemonday.NewPolicy()
	p.AllowURLSchemes("http", "https", "mailto", "cid")
	p.RequireParseableURLs(true)
	p.RequireNoFollowOnLinks(true)
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true)
	p.AllowDataURIImages()

	p.AllowElements(
		"html", "body", "div", "span", "p", "br", "hr", "center", "font",
		"h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code",
		"b", "strong", "i", "em", "u", "s", "strike", "small", "big", "sub", "sup", "mark",
		"ul", "ol", "li", "dl", "dt", "dd",
		"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "colgroup", "col",
	)
	p.AllowAttrs("title", "dir", "lang", "align").Globally()
	p.AllowAttrs("href").OnElements("a")
	p.AllowAttrs("alt", "title", "width", "height").OnElements("img")
	// Only inline images: a remote src (or srcset) would be fetched when the
	// preview is opened, which is exactly what an open-tracking pixel wants.
	p.AllowAttrs("src").Matching(inlineImageSrc).OnElements("img")
	p.AllowAttrs("valign", "colspan", "rowspan", "cellpadding", "cellspacing", "border").
		Matching(bluemonday.Number).OnElements("table", "tr", "td", "th", "col", "colgroup")
	p.AllowAttrs("width", "height").Matching(percentOrNumber).OnElements("table", "td", "th")
	p.AllowAttrs("bgcolor", "color").Matching(colorValue).OnElements("table", "tr", "td", "th", "body", "font")
	p.AllowAttrs("face", "size").OnElements("font")
	p.AllowStyles(
		"color", "background-color", "font-family", "font-size", "font-weight", "font-style",
		"text-align", "text-decoration", "text-transform", "line-height", "letter-spacing",
		"padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
		"margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
		"width", "max-width", "min-width", "height", "vertical-align", "display",
		"border-collapse", "border-spacing", "white-space",
	).Globally()
	return p
})

var (
	inlineImageSrc  = regexp.MustCompile(`^(?i)(cid:[^\s]+|data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]+)$`)
	percentOrNumber = regexp.MustCompile(`^[0-9]{1,5}%?$`)
	colorValue      = regexp.MustCompile(`^(#[0-9A-Fa-f]{3,8}|[A-Za-z]{1,20})$`)
)
