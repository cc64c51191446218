#
# civicrm-gateway plus the docker CLI (client only), for CIVI_GATEWAY_BACKEND=cv|pipe with
# CIVI_GATEWAY_CV_CONTEXT="docker exec -i ..." against a CiviCRM container. Built on top of the
# gateway image, so that the main Dockerfile's default build needs no docker image:
#
#   docker build -t civicrm-gateway:local .
#   docker build -f deploy/docker/cv.Dockerfile -t civicrm-gateway:local-cv deploy/docker
#
# Using it means mounting the Docker socket, which is root on the host: see docs/deploy.md first.
# Air-gapped: DOCKER_CLI_IMAGE may be any local image holding a static /usr/local/bin/docker.

ARG GATEWAY_IMAGE=civicrm-gateway:local
ARG DOCKER_CLI_IMAGE=docker:27-cli

FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM ${GATEWAY_IMAGE} AS cv
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
