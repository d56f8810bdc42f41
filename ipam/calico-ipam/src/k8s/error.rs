//! What a Kubernetes API call can end in. Messages name the server, the resource and the
//! verb, never a token, a key or a kubeconfig's contents.

/// One failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig or the connection settings cannot be used.
    #[error("{0}")]
    Config(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A resourceVersion or UID precondition failed: someone else changed the object.
    #[error("{0} was modified by someone else")]
    Conflict(String),
    /// 401: the credentials were refused, typically because a service-account token
    /// expired or its pod is gone. `expired` when the server's message says so; a real
    /// kube-apiserver answers only "Unauthorized" and logs why, so the message points at the
    /// refresher either way.
    #[error(
        "connection is unauthorized: the API server at {server} refused the credentials of \
         the CNI kubeconfig (401 Unauthorized{}); keep its token fresh with `calico-ipam \
         kubeconfig refresh` (README, \"Installing on a node\")",
        if *expired { ": the token has expired" } else { "" }
    )]
    Unauthorized { server: String, expired: bool },
    /// 403: authenticated, but RBAC does not grant the verb.
    #[error(
        "forbidden: the CNI plugin's user may not {verb:?} {resource}: grant the verb in its \
         ClusterRole ({message})"
    )]
    Forbidden {
        verb: String,
        resource: String,
        message: String,
    },
    /// 400 / 422: the server refused the object itself.
    #[error("the API server refused {what}: {message}")]
    Invalid { what: String, message: String },
    /// No answer, a refused connection, a timeout, or a 5xx / 429: worth retrying later.
    #[error("the API server at {server} is unreachable: {reason}")]
    Unavailable { server: String, reason: String },
    #[error("the API server answered {code} to {what}: {message}")]
    Api {
        code: u16,
        what: String,
        message: String,
    },
}

impl KubeError {
    /// Whether retrying later may help (the CNI code is then "try again later").
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            KubeError::Unavailable { .. }
                | KubeError::Unauthorized { .. }
                | KubeError::Forbidden { .. }
        )
    }
}

/// The RBAC verb and resource of a request, as a ClusterRole spells them:
/// `GET /apis/crd.projectcalico.org/v1/ipamblocks` is `list` of
/// `ipamblocks.crd.projectcalico.org`; `PATCH /api/v1/namespaces/n/pods/p/status` is
/// `patch` of `pods/status`.
pub fn rbac_of(method: &str, path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/<rest> or /apis/<group>/<version>/<rest>
    let (group, rest): (&str, &[&str]) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (group, rest),
        _ => ("", &[]),
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, sub, ..] => (*resource, true, Some(*sub)),
        [] => ("", false, None),
    };
    let verb = match method {
        "GET" if named => "get",
        "GET" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => other,
    };
    let mut resource = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if let Some(sub) = sub {
        resource = format!("{resource}/{sub}");
    }
    (verb.to_string(), resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources_as_rbac_names_them() {
        assert_eq!(
            rbac_of("GET", "/apis/crd.projectcalico.org/v1/ipamblocks"),
            ("list".into(), "ipamblocks.crd.projectcalico.org".into())
        );
        assert_eq!(
            rbac_of(
                "GET",
                "/apis/crd.projectcalico.org/v1/clusterinformations/default"
            ),
            (
                "get".into(),
                "clusterinformations.crd.projectcalico.org".into()
            )
        );
        assert_eq!(
            rbac_of("PATCH", "/api/v1/namespaces/default/pods/web/status"),
            ("patch".into(), "pods/status".into())
        );
        assert_eq!(
            rbac_of("POST", "/apis/crd.projectcalico.org/v1/ipamconfigs"),
            ("create".into(), "ipamconfigs.crd.projectcalico.org".into())
        );
        assert_eq!(
            rbac_of("GET", "/api/v1/namespaces/kube-system"),
            ("get".into(), "namespaces".into())
        );
        assert_eq!(
            rbac_of("GET", "/api/v1/nodes/node-1"),
            ("get".into(), "nodes".into())
        );
    }
}
