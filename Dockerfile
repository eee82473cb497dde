# syntax=docker/dockerfile:1
# Build stage: full toolchain (better-sqlite3 compiles if no prebuilt binary matches), dev dependencies, tsc,
# and esbuild for the web console (console/ → dist/console, by scripts/build-console.mjs).
FROM node:20-bookworm-slim AS build
WORKDIR /app
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY console ./console
COPY scripts ./scripts
RUN npm run build && npm prune --omit=dev

# Runtime stage: compiled JavaScript (the console's built files in dist/console) and production dependencies
# only, as the unprivileged `node` user.
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HERALD_DATA_DIR=/data \
    HERALD_HOST=0.0.0.0 \
    HERALD_PORT=8080
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# The `herald` command line (it runs dist/cli/main.js, built above), on PATH: docker exec <container> herald subs list
COPY bin ./bin
RUN ln -s /app/bin/herald.js /usr/local/bin/herald
COPY migrations ./migrations
COPY openapi ./openapi
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.HERALD_PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Exec form: node is PID 1's only process and receives SIGTERM itself, so shutdown flushes the log.
CMD ["node", "dist/main.js"]
