# Mail Queue container image: one static binary on distroless.
#   docker build -t mailqueue .
#   docker run --rm mailqueue migrate      # then: ... mailqueue all (the default)

FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags "-s -w" -o /mailqueue ./cmd/mailqueue

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /mailqueue /mailqueue
# REST API (MQ_HTTP_ADDR) and inbound bounce SMTP (MQ_INBOUND_ADDR); inside a
# container set both to 0.0.0.0:<port>, as docker-compose.yml does.
EXPOSE 8080 2525
USER nonroot:nonroot
ENTRYPOINT ["/mailqueue"]
CMD ["all"]
