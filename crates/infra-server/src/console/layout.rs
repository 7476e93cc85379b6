//! The frame of every console page: the header with who is signed in and
//! the sign-out form, the main column, the stylesheet and the script.

use maud::{DOCTYPE, Markup, html};

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            title { (title) " · Infra" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// The sections every user has, in the navigation's order: (path, name).
const SECTIONS: [(&str, &str); 3] = [
    ("/console", "My access"),
    ("/console/requests", "Requests"),
    ("/console/account", "Sessions and keys"),
];

/// The sections of those with a role on Infra (`view` or `admin`).
const ADMIN_SECTIONS: [(&str, &str); 8] = [
    ("/console/users", "Users"),
    ("/console/groups", "Groups"),
    ("/console/grants", "Grants"),
    ("/console/destinations", "Destinations"),
    ("/console/identity", "Identity"),
    ("/console/audit", "Audit"),
    ("/console/recordings", "Recordings"),
    ("/console/service-accounts", "Service accounts"),
];

fn links(sections: &[(&str, &str)], title: &str) -> Markup {
    html! {
        @for (path, name) in sections {
            @if *name == title {
                a href=(path) aria-current="page" { (name) }
            } @else {
                a href=(path) { (name) }
            }
        }
    }
}

/// A page for the signed-in `user`; `csrf` goes into its forms; `staff`
/// (a role on Infra) adds the admin sections. Its title is also the
/// section it belongs to.
pub(super) fn page(title: &str, user: &str, csrf: &str, staff: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Console" {
                        a.brand href="/console" { "Infra" }
                        (links(&SECTIONS, title))
                    }
                    div.who {
                        span { (user) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if staff {
                    nav.admin aria-label="Administration" { (links(&ADMIN_SECTIONS, title)) }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page for anyone (signed in or not): the brand and a narrow card.
pub(super) fn plain(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.plain {
                main #main .narrow {
                    p.brand { "Infra" }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page that says what went wrong, for anyone.
pub(super) fn error_page(message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Cannot show this page"))
            body {
                main #main {
                    h1 { "Cannot show this page" }
                    p.error role="alert" { (message) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_users_control_is_text_never_markup() {
        let evil = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>";
        let page = page(evil, evil, evil, true, html! { p { (evil) } }).into_string();
        assert!(
            !page.contains("<script>alert") && !page.contains("<img src=x"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        let err = error_page(evil).into_string();
        assert!(!err.contains("<script>alert"), "{err}");
    }
}
