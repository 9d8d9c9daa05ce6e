# nginx with lameduck as its init (the wrapper shape): lameduck is PID 1 and runs nginx as its
# child. Build the lameduck image first (see images/Dockerfile), then, from the repository root:
#
#   docker build -f images/nginx.Dockerfile -t lameduck-nginx:0.1.0 images
#
# Both base images are build arguments, so a test can substitute locally imported ones:
#   docker build -f images/nginx.Dockerfile --build-arg NGINX_IMAGE=my-local-nginx ...
ARG LAMEDUCK_IMAGE=lameduck:0.1.0
ARG NGINX_IMAGE=nginx:1.27

FROM ${LAMEDUCK_IMAGE} AS lameduck

FROM ${NGINX_IMAGE}
COPY --from=lameduck /lameduck /lameduck

# The stop signal goes to lameduck, not to nginx. The kubelet (or `docker stop`) sends it TERM,
# which starts the drain: /readyz fails at once, nginx keeps serving for the shutdown delay
# while endpoints are removed, and only then does lameduck send nginx QUIT (graceful shutdown:
# in-flight requests finish). The nginx image's own SIGQUIT would start the drain too (it is
# lameduck's --stop-signal); TERM is said here because it is what every tool expects.
STOPSIGNAL SIGTERM

# 80: nginx. 8099: lameduck's /readyz, /livez, /prestop, /status and /metrics (its --listen default).
EXPOSE 80 8099

# --ready-check: /readyz passes only once nginx accepts connections.
# The command after `--` is nginx itself, in the foreground. This skips the nginx image's own
# /docker-entrypoint.sh (templates, IPv6 listen); to keep it, run
# `/docker-entrypoint.sh nginx -g 'daemon off;'` instead: it execs nginx, so nginx is still
# lameduck's child.
ENTRYPOINT ["/lameduck", "--stop-signal", "QUIT", "--ready-check", "tcp://127.0.0.1:80", "--"]
CMD ["nginx", "-g", "daemon off;"]
