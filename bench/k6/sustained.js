// Sustained load: 500 POST /v1/emails per second for 10 minutes.
//   k6 run -e MQ_URL=http://127.0.0.1:8080 -e MQ_API_KEY=mq_live_… bench/k6/sustained.js
// Below the 700 req/s of the latency target, so p99 must stay under 20 ms.
import { sendEmail, thresholds } from './lib.js';

export const options = {
  scenarios: {
    sustained: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 500),
      timeUnit: '1s',
      duration: __ENV.DURATION || '10m',
      preAllocatedVUs: 100,
      maxVUs: 1000,
    },
  },
  thresholds: {
    ...thresholds,
    http_req_duration: ['p(99)<20'],
    dropped_iterations: ['count<1'],
  },
};

export default function () {
  sendEmail();
}
