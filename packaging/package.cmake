# The Debian package (issue 14; ADR 0029): `cpack -G DEB` in a build directory makes
# tamma-worker_<version>-<release>_<arch>.deb with both binaries, the default configuration
# under /etc/tamma-worker (conffiles), the systemd units and the maintainer scripts that
# create the orchestrator's system user and remove /var/lib state on purge only.
# Everything it installs outside the build is listed here; the files are in packaging/.
# tests/packaging/deb_test.sh builds, installs, runs and purges it.

set(TAMMA_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})
set(TAMMA_DEB_RELEASE 1)

install(TARGETS tamma-worker tamma-orchestrator RUNTIME DESTINATION bin COMPONENT tamma)
# Relocations resolved at start and then read-only (Debian's hardening: bindnow; relro and PIE
# are the toolchain's defaults).
foreach(binary tamma-worker tamma-orchestrator)
  target_link_options(${binary} PRIVATE LINKER:-z,relro LINKER:-z,now)
endforeach()

# Absolute destinations: the package's paths are fixed (/etc, /lib/systemd as Debian 12 has
# them). A `cmake --install` outside a package needs DESTDIR for these.
install(FILES ${TAMMA_PACKAGING_DIR}/etc/config.json ${TAMMA_PACKAGING_DIR}/etc/orchestrator.env
        DESTINATION /etc/tamma-worker PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
        COMPONENT tamma)
install(FILES ${TAMMA_PACKAGING_DIR}/systemd/tamma-worker.service
              ${TAMMA_PACKAGING_DIR}/systemd/tamma-orchestrator.service
        DESTINATION /lib/systemd/system COMPONENT tamma)

# Documentation Debian requires: copyright, the changelog (gzip -9n: reproducible), manuals.
set(tamma_generated ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${tamma_generated})
configure_file(${TAMMA_PACKAGING_DIR}/debian/changelog.in ${tamma_generated}/changelog @ONLY)
set(tamma_gzipped ${tamma_generated}/changelog)
foreach(page tamma-worker.1 tamma-orchestrator.1)
  configure_file(${TAMMA_PACKAGING_DIR}/man/${page} ${tamma_generated}/${page} COPYONLY)
  list(APPEND tamma_gzipped ${tamma_generated}/${page})
endforeach()
foreach(file IN LISTS tamma_gzipped)
  execute_process(COMMAND gzip -9nc ${file} OUTPUT_FILE ${file}.gz RESULT_VARIABLE gzip_result)
  if(NOT gzip_result EQUAL 0)
    message(FATAL_ERROR "gzip ${file} failed")
  endif()
endforeach()
file(RENAME ${tamma_generated}/changelog.gz ${tamma_generated}/changelog.Debian.gz)
install(FILES ${TAMMA_PACKAGING_DIR}/debian/copyright ${tamma_generated}/changelog.Debian.gz
        DESTINATION share/doc/tamma-worker COMPONENT tamma)
# For non-root workers on Ubuntu 23.10+ (userns restricted by AppArmor): an example, see the file.
install(FILES ${TAMMA_PACKAGING_DIR}/apparmor/tamma-worker
        DESTINATION share/doc/tamma-worker/examples/apparmor.d COMPONENT tamma)
install(FILES ${tamma_generated}/tamma-worker.1.gz ${tamma_generated}/tamma-orchestrator.1.gz
        DESTINATION share/man/man1 COMPONENT tamma)
install(FILES ${TAMMA_PACKAGING_DIR}/debian/lintian-overrides
        DESTINATION share/lintian/overrides RENAME tamma-worker COMPONENT tamma)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tamma-worker)
set(CPACK_PACKAGE_VENDOR "Tamma")
set(CPACK_PACKAGE_CONTACT "Tamma maintainers <maintainers@users.noreply.b-seed-e0afc252.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "sandboxed build, test and scan task worker and its orchestrator")
# The extended description, wrapped to 80 columns; CPack puts the summary above it and indents
# it for the control file.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "tamma-worker runs build, test and security-scan tasks in a sandbox made from
kernel primitives (namespaces, cgroups v1 and v2, seccomp, rlimits, dropped
privileges) under hard resource limits: one-shot for CI jobs (tamma-worker run)
or as a daemon of an orchestrator (tamma-worker start).

tamma-orchestrator is the HTTP task queue the daemons lease work from, on
SQLite or PostgreSQL.")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${TAMMA_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Library dependencies from the binaries (dpkg-shlibdeps), plus what the scripts use.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# The workspace disk limit loop-mounts ext4 images (mkfs.ext4); the checkout runs git.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "e2fsprogs, git, ca-certificates")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${TAMMA_PACKAGING_DIR}/debian/conffiles ${TAMMA_PACKAGING_DIR}/debian/postinst
    ${TAMMA_PACKAGING_DIR}/debian/prerm ${TAMMA_PACKAGING_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
include(CPack)
