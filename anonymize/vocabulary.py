"""Closed vocabularies: the only free text that may pass into an output.

Web paths, query keys and values, referer hosts and user agents carry whatever people typed or
were given: names, phone numbers, aliases, meeting ids. Under default-deny, a word passes only
when it is in one of these lists (or in the policy's ``web.vocabulary``); anything else becomes a
typed placeholder. The lists are small on purpose: common web and unified-communications path
words, file extensions, the common browser, OS and crawler families.

No word here is a personal name: every first and last name that ``faker`` knows in its main
locales is left out when the module loads (``test_vocabulary_holds_no_personal_name`` checks it),
so "page", "price" or "may", which are also surnames, are not vocabulary; a policy may add them
for its own site (``web.vocabulary``) at its own risk.

Examples
--------
>>> is_vocabulary_word("autodiscover"), is_vocabulary_word("jane")
(True, False)
>>> "Chrome" in BROWSER_FAMILIES
True
"""

from __future__ import annotations

from functools import lru_cache

_WORDS = """
about abs access account accounts action activate active activity add admin administration
administrator advanced agenda ajax alert alerts all analytics android announcements anonymous
answer api app apple application applications apply apps archive archives area arrow article
articles asset assets attachment attachments attendee attendees audio auth authenticate
authentication authorize autodiscover available back backend backup badge banner base basic
beta billing bin blank blog blogs board book booking bootstrap bot bots bridge browse browser
bug build bulk business button buy cache calendar call calls callback cancel captcha card cards
careers cart catalog categories category center cert certificate certprov certprovisioning cgi
change changelog channel channels chat check checkout class classic clear click client clients
close cloud cluster cms code collaboration com comment comments common community company compare
compatibility component components conf conference conferences conferencing config
configuration confirm connect connection console contact contacts content contents control
cookie cookies core count counter country create credentials cron css custom customer customers
dashboard data database date day debug default delete demo deploy desktop detail details dev
developer developers device devices dial dialin dialout dir directory disabled discover
discovery display dist doc docs document documentation documents domain download downloads
draft drive dynamic edit editor edu education email embed en end endpoint enterprise entry env
error errors event events example exchange expand explore export extension extensions external
fag faq favicon feature features federation feed feedback file files filter find firmware
flash focus folder font fonts form format forms forum forums forgot free frontend full gallery
gateway general generic get global graph group groupexpansion groups guest guide handler hc
header health hello help history home host hosted hosting hotfix how html http https hub hybrid
hybridconfig icon icons id image images img import inbox include includes index info
information init install installer instant integration interface internal international invite
invites item items jobs join js json kb key keys knowledge landing language languages last
latest launch layout learn legal lib libs license link links list lists live load loader local
locale location lock log login logo logout logs lwa lync mail main maintenance manage
management manager manual map maps marketing master mcx media meet meeting meetings member
members menu message messages messaging meta metrics mex microsoft min misc mobile mobility
modal modules monitor monitoring more msg my name names nav network new news newsletter next
node none notification notifications oauth object office old online open options order orders
org organization other outlook overview owa package packages pages panel partner partners
passive passiveauth password path pay payment payments people permissions persistent
persistentchat personal phone phones photo photos php pic picture pictures ping platform
plugin plugins policies policy poll pool portal preferences presence press preview pricing
print privacy private product products profile profiles project projects promo provisioning
proxy public publish purchase query queue quick reach reachjoin read readme recent record
recording recordings redirect refresh register registration release releases remote remove
replay report reports request requests reset resource resources response rest result results
return review rgs rgsclients robots room rooms root rss rtc sale sales sample save scheduler
schema screen script scripts sdk search secure security select send server servers service
services session sessions setting settings setup share shared sharepoint shell shop show sign
signin signout signup site sitemap sites skype small social software solutions source space
speaker spec special sso stage standard start stat static statistics stats status storage
store stream streaming style styles subscribe subscription success summary support survey svc
sync system tag tags team teams tel template templates tenant terms test testing text theme
themes thumb thumbnail ticket tickets tmp token tools top topic topics track tracking training
translate trial ucwa ui unsubscribe update updates upgrade upload uploads url us usage user
users util utils validate vendor verify version video videos view viewer views voice voip web
webapp webinar webinars webpages webticket webticketservice website welcome widget widgets wiki
win windows wp xml
assets ajax wordpress phpmyadmin pma myadmin cgi wlwmanifest xmlrpc vendor phpunit env git aws
actuator solr jenkins manager boaform owa ecp autodiscoverservice certprovisioningservice
mobilityservice webticketservice groupexpansionservice lsc mobile reachclient client webpages
utm medium campaign term ref lang page size sort order limit offset ver locale src format
q s p t v
a an and as at by for from how in is it of on or the to what when where why with you your our
"""

# Known file extensions: kept after a placeholder (``{file}.pdf``).
EXTENSIONS = frozenset(
    [
        "html",
        "htm",
        "xhtml",
        "php",
        "asp",
        "aspx",
        "ashx",
        "asmx",
        "axd",
        "svc",
        "jsp",
        "cgi",
        "pl",
        "js",
        "mjs",
        "css",
        "map",
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "ico",
        "webp",
        "bmp",
        "woff",
        "woff2",
        "ttf",
        "eot",
        "otf",
        "pdf",
        "txt",
        "xml",
        "json",
        "csv",
        "xls",
        "xlsx",
        "doc",
        "docx",
        "ppt",
        "pptx",
        "zip",
        "gz",
        "tgz",
        "tar",
        "7z",
        "rar",
        "mp4",
        "webm",
        "mp3",
        "wav",
        "ogg",
        "m4a",
        "mov",
        "avi",
        "flv",
        "swf",
        "msi",
        "exe",
        "dmg",
        "pkg",
        "apk",
        "ics",
        "vcf",
        "md",
        "yml",
        "yaml",
        "ini",
        "conf",
        "cfg",
        "log",
        "bak",
        "sql",
        "env",
    ]
)

# ISO 639-1 languages and the regions a ``lang=`` value names with them.
LANGUAGES = frozenset(
    [
        "ar",
        "bg",
        "ca",
        "cs",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "fi",
        "fr",
        "he",
        "hi",
        "hr",
        "hu",
        "id",
        "it",
        "ja",
        "ko",
        "lt",
        "lv",
        "ms",
        "nb",
        "nl",
        "no",
        "pl",
        "pt",
        "ro",
        "ru",
        "sk",
        "sl",
        "sr",
        "sv",
        "th",
        "tr",
        "uk",
        "vi",
        "zh",
    ]
)

# ua-parser families that are published as they are; any other family is "Other", or "bot" for
# an unknown crawler (a bot or an app may be named after a person).
BROWSER_FAMILIES = frozenset(
    {
        "Chrome", "Chrome Mobile", "Chrome Mobile iOS", "Chrome Mobile WebView", "Chromium",
        "Firefox", "Firefox Mobile", "Firefox iOS", "Safari", "Mobile Safari",
        "Mobile Safari UI/WKWebView", "Edge", "Edge Mobile", "IE", "IE Mobile", "Opera",
        "Opera Mobile", "Opera Mini", "Samsung Internet", "UC Browser", "Yandex Browser",
        "Vivaldi", "Brave", "Silk", "Android", "Outlook", "Apple Mail", "Thunderbird", "Skype",
        "Facebook", "Instagram", "WeChat", "QQ Browser", "Baidu Browser", "Sogou Explorer",
        "Maxthon", "Puffin", "MiuiBrowser", "HeadlessChrome", "PhantomJS", "Electron",
        # crawlers and tools, by their public names
        "Googlebot", "Googlebot-Image", "Googlebot-Mobile", "AdsBot-Google", "bingbot",
        "BingPreview",
        "YandexBot", "Baiduspider", "DuckDuckBot", "Applebot", "AhrefsBot", "SemrushBot",
        "MJ12bot", "DotBot", "PetalBot", "Bytespider", "facebookexternalhit", "Facebot",
        "Twitterbot", "LinkedInBot", "Slackbot", "Slackbot-LinkExpanding", "Discordbot",
        "TelegramBot", "WhatsApp", "Pinterestbot", "Sogou web spider", "Exabot", "SeznamBot",
        "Yahoo! Slurp", "archive.org_bot", "ia_archiver", "GPTBot", "ClaudeBot", "CCBot",
        "Amazonbot", "curl", "Wget", "Python Requests", "Python-urllib", "Go-http-client",
        "okhttp", "Apache-HttpClient", "Java", "libwww-perl", "PostmanRuntime", "axios",
        "node-fetch", "Scrapy", "Nagios", "Zabbix", "Pingdom", "UptimeRobot", "Site24x7",
    }
)  # fmt: skip
OS_FAMILIES = frozenset(
    {
        "Windows", "Mac OS X", "iOS", "iPadOS", "Android", "Linux", "Ubuntu", "Debian",
        "Fedora", "Red Hat", "CentOS", "SUSE", "openSUSE", "Arch Linux", "Chrome OS",
        "Chromecast", "Windows Phone", "BlackBerry OS", "FreeBSD", "OpenBSD", "NetBSD", "Solaris",
        "Tizen", "KaiOS", "HarmonyOS", "watchOS", "tvOS", "Mac OS", "Linux Mint", "Gentoo",
    }
)  # fmt: skip


@lru_cache(maxsize=1)
def _personal_names() -> frozenset[str]:
    """First and last names faker knows in its main locales (lower case)."""
    import importlib

    names: set[str] = set()
    for loc in ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_IN",
                "pl_PL", "sv_SE", "en_AU", "en_CA", "ga_IE"):  # fmt: skip
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except ImportError:
            continue
        for attr in ("first_names", "last_names", "first_names_male", "first_names_female",
                     "last_names_male", "last_names_female"):  # fmt: skip
            found = getattr(provider, attr, None) or ()
            names |= {str(n).lower() for n in found}
    return frozenset(names)


@lru_cache(maxsize=1)
def base_vocabulary() -> frozenset[str]:
    """The shipped path and query words, without any personal name."""
    return frozenset(_WORDS.split()) - _personal_names()


def is_vocabulary_word(word: str, extra: frozenset[str] = frozenset()) -> bool:
    """True for a lower-case word of the shipped vocabulary or of ``extra`` (the policy's)."""
    return word in base_vocabulary() or word in extra
