"""Tests of the deployment zip made by build.sh."""
