# The kubectl-lameduck image: the plugin's static binary alone, at /kubectl-lameduck, run as a
# non-root user. examples/webhook/webhook.yaml runs its admission webhook from it.
#
# Built like images/Dockerfile, from a binary cargo has already built. From the repository root:
#
#   scripts/build-static.sh kubectl-lameduck
#   docker build -f images/kubectl-lameduck.Dockerfile -t kubectl-lameduck:0.1.0 target/image-kubectl-lameduck
#
# The build context holds the static binary alone. The init's image never carries this binary,
# and this one never carries the init.
#
# Uses:
#   - the admission webhook: `/kubectl-lameduck webhook --tls-cert ... --tls-key ...`
#   - lint or inject in CI: `docker run --rm -i kubectl-lameduck:0.1.0 lint -`
FROM scratch
COPY kubectl-lameduck /kubectl-lameduck
USER 65532:65532
ENTRYPOINT ["/kubectl-lameduck"]
