#!/usr/bin/env bash
# Walks through one interview question with curl, as a client would:
# register, log in, add a resume and a job posting, start a session of three questions,
# ask for a question (202 at once), long-poll the operation until the worker has
# committed it, then answer that question.
set -euo pipefail
API_URL=${API_URL:-http://127.0.0.1:8080}

field() { # field NAME < json: the first string or number value of NAME
    sed -n "s/.*\"$1\":\(\"\([^\"]*\)\"\|\([0-9]*\)\).*/\2\3/p" | head -n 1
}
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

email="demo-$(date +%s)-$RANDOM@example.com"
say "1. Register $email and log in"
curl -fsS -X POST "$API_URL/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"demo password\", \"full_name\": \"Demo Candidate\"}"
token=$(curl -fsS -X POST "$API_URL/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"demo password\"}" | field access_token)
auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')

say "2. Add a resume and a job posting"
curl -fsS -X PUT "$API_URL/api/v1/resume" "${auth[@]}" \
    -d '{"content": "Six years of backend work in Rust and Go; built a payments ledger on PostgreSQL."}' >/dev/null
posting=$(curl -fsS -X POST "$API_URL/api/v1/job-postings" "${auth[@]}" \
    -d '{"title": "Senior backend engineer", "company": "Acme", "description": "Design durable job queues and APIs on PostgreSQL and Kubernetes."}' | field id)
echo "job posting $posting"

say "3. Start a session of three questions"
session=$(curl -fsS -X POST "$API_URL/api/v1/sessions" "${auth[@]}" \
    -d "{\"job_posting_id\": \"$posting\", \"question_limit\": 3}" | field id)
echo "session $session"

say "4. Ask for the next question: 202 at once, with the operation to poll"
response=$(curl -fsS -i -X POST "$API_URL/api/v1/sessions/$session/generate-question" "${auth[@]}" -H "Idempotency-Key: demo-$RANDOM")
echo "$response" | grep -iE '^(HTTP|location|retry-after)'
operation=$(echo "$response" | tail -n 1 | field id)

# Long-polls operation $1 until it ends; prints its last body, fails unless completed.
finish() {
    local body status
    for _ in $(seq 1 10); do
        body=$(curl -fsS "$API_URL/api/v1/operations/$1?wait=10" "${auth[@]}")
        status=$(echo "$body" | field status)
        [[ "$status" == completed || "$status" == failed ]] && break
    done
    echo "$body"
    [[ "$status" == completed ]] || { echo "the operation did not complete" >&2; exit 1; }
}

say "5. Long-poll the operation (woken by the worker's commit)"
body=$(finish "$operation")
echo "$body"
question=$(echo "$body" | field message_id)

say "6. Answer that question"
answer=$(curl -fsS -X POST "$API_URL/api/v1/sessions/$session/answers" "${auth[@]}" \
    -d "{\"content\": \"I would make the enqueue part of the same transaction as the write it follows.\", \"question_id\": \"$question\"}")
echo "$answer"
answer=$(echo "$answer" | field id)

say "6b. Ask for feedback on that answer: another operation, polled the same way"
response=$(curl -fsS -i -X POST "$API_URL/api/v1/sessions/$session/answers/$answer/feedback" "${auth[@]}")
echo "$response" | grep -iE '^(HTTP|location|retry-after)'
body=$(finish "$(echo "$response" | tail -n 1 | field id)")
echo "$body"

say "7. The session (questions_remaining) and its messages"
curl -fsS "$API_URL/api/v1/sessions/$session" "${auth[@]}"
echo
curl -fsS "$API_URL/api/v1/sessions/$session/messages" "${auth[@]}"
echo
